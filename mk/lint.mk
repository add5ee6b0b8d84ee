.PHONY: lint-python lint-shell lint-imports
LINT_TARGETS += lint-python lint-shell lint-imports

lint-python: setup-venv
	ruff check .
	ruff format --check .

lint-shell:
	shellcheck -x $$(git ls-files -co --exclude-standard '*.sh' '.ci/run' | sort -u)

lint-imports: setup-venv ## the import rule between the package's wings (proxy/pyproject.toml)
	cd proxy && lint-imports --no-cache
