# medtls: one entry point for setup, tests, the lab, images and benchmarks.
# Each area keeps its targets in mk/<area>.mk; this file wires them together.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
VENV ?= $(ROOT)/.venv
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)

# Areas append their stages, in the order `make test` runs them.
LINT_TARGETS :=
TEST_STAGES :=

include mk/lint.mk
include mk/proxy.mk
-include mk/deb.mk
-include mk/lab.mk
-include mk/ansible.mk
-include mk/image.mk
-include mk/bench.mk
-include mk/audit.mk
include mk/fuzz.mk

.PHONY: help setup setup-apt setup-venv lint test test-stages
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

setup: setup-apt setup-venv ## install every apt and pip dependency (idempotent)

setup-apt: ## install the Debian packages listed in setup/apt/*.list
	scripts/setup-apt.sh setup/apt/*.list

setup-venv: $(VENV)/.installed ## create the pinned Python venv for tests and tooling

$(VENV)/.installed: setup/requirements-dev.txt proxy/pyproject.toml proxy/testpki/pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r setup/requirements-dev.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e proxy -e proxy/testpki
	touch $@

lint: setup-venv $(LINT_TARGETS) ## ruff, shellcheck, yamllint, ansible-lint

test: setup ## everything CI runs: lint and every test stage, with a timing summary
	scripts/run-stages.sh lint $(TEST_STAGES)

test-stages: ## print the stages `make test` runs, in order
	@echo lint $(TEST_STAGES)
