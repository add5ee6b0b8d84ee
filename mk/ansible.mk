# Ansible roles, playbook and Molecule scenarios (roles/, ansible/, molecule/); the Ansible content
# is the collection medtls.appliance (galaxy.yml, playbooks/, meta/runtime.yml at the root).
.PHONY: lint-ansible collection test-collection test-molecule test-ansible-image docker-ensure molecule-image
LINT_TARGETS += lint-ansible
TEST_STAGES += test-collection test-molecule test-ansible-image

MOLECULE_SCENARIOS := $(sort $(patsubst molecule/%/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))
MEDTLS_MOLECULE_IMAGE ?= medtls/trixie-systemd:1
export MEDTLS_MOLECULE_IMAGE

# ansible-lint --offline does not install this collection into its cache: its syntax checks find
# medtls.appliance.* through the checkout's link, as ansible/ansible.cfg and Molecule do.
lint-ansible: setup-venv ## ansible-lint (production profile) and yamllint on roles, playbooks, scenarios
	yamllint -s .yamllint .ansible-lint .config galaxy.yml requirements.yml meta roles playbooks ansible molecule
	ANSIBLE_COLLECTIONS_PATH=$(ROOT)/ansible/collections ansible-lint --offline -q galaxy.yml meta roles playbooks ansible molecule

collection: setup-venv ## the Ansible collection medtls.appliance -> build/collection/medtls-appliance-<version>.tar.gz
	scripts/build-collection.sh $(ROOT)/build/collection

test-collection: setup-venv ## build the collection, install it into a temporary path, run its playbook from there; update.yml input checks
	$(PY) -m pytest -q -p no:cacheprovider ansible/tests/test_collection.py ansible/tests/test_update_inputs.py

docker-ensure: ## start dockerd (198.19.0.0/16 only) unless it is running
	scripts/docker-ensure.sh

molecule-image: docker-ensure ## build the local trixie+systemd image Molecule runs (skipped when present)
	scripts/docker-base-image.sh

test-molecule: setup-venv molecule-image ## every Molecule scenario, two at a time, with durations
	molecule/run-scenarios.sh $(MOLECULE_SCENARIOS)

test-ansible-image: setup-venv molecule-image deb ## site.yml in image context (chroot): enabled, idempotent, host untouched
	ansible/tests/image-context.sh

.PHONY: $(addprefix molecule-,$(MOLECULE_SCENARIOS))
$(addprefix molecule-,$(MOLECULE_SCENARIOS)): molecule-%: setup-venv molecule-image ## one Molecule scenario
	molecule test -s $*
