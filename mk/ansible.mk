# Ansible roles, playbook and Molecule scenarios (roles/, ansible/, molecule/).
.PHONY: lint-ansible test-molecule test-ansible-image docker-ensure molecule-image
LINT_TARGETS += lint-ansible
TEST_STAGES += test-molecule test-ansible-image

MOLECULE_SCENARIOS := $(sort $(patsubst molecule/%/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))
MEDTLS_MOLECULE_IMAGE ?= medtls/trixie-systemd:1
export MEDTLS_MOLECULE_IMAGE

lint-ansible: setup-venv ## ansible-lint (production profile) and yamllint on roles, playbooks, scenarios
	yamllint -s .yamllint .ansible-lint roles ansible molecule
	ansible-lint --offline -q roles ansible molecule

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
	molecule -c molecule/base.yml test -s $*
