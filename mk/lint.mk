.PHONY: lint-python lint-shell
LINT_TARGETS += lint-python lint-shell

lint-python: setup-venv
	ruff check .
	ruff format --check .

lint-shell:
	shellcheck -x $$(git ls-files -co --exclude-standard '*.sh' '.ci/run' | sort -u)
