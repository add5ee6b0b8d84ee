.PHONY: lab lab-up lab-down test-lab setup-lab
TEST_STAGES += test-lab

LAB_PY := cd lab && $(PY)

setup-lab: setup-venv
	scripts/setup-apt.sh setup/apt/base.list setup/apt/lab.list

lab: setup-lab ## virtual lab: modality/box/pacs/mallory/router/dc namespaces, real medtls, summary
	$(LAB_PY) -m medlab.demo

lab-up: setup-lab ## build the lab with fixed names and keep it running (see docs/lab.md)
	$(LAB_PY) -m medlab.demo --up

lab-down: ## remove the lab built by lab-up
	$(LAB_PY) -m medlab.demo --down

test-lab: setup-venv ## Mallory cases and interception tests in the lab (root, real kernel)
	$(LAB_PY) -m pytest -q -p no:cacheprovider tests
