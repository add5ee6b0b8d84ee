.PHONY: lint-python lint-shell
LINT_TARGETS += lint-python lint-shell

lint-python:
	ruff check .
	ruff format --check proxy bench lab 2>/dev/null || ruff format --check proxy

lint-shell:
	shellcheck $$(git ls-files -co --exclude-standard '*.sh' '.ci/run' | sort -u)
