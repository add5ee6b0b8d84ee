# Coverage-guided fuzzing of every parser of outside input (proxy/fuzz/, atheris).
# `fuzz-smoke` runs in `make test`; `make fuzz` is the long run.
.PHONY: fuzz fuzz-smoke
TEST_STAGES += fuzz-smoke
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 8
FUZZ_TARGETS ?=

fuzz-smoke: setup-venv ## every fuzz target for a few seconds each
	cd proxy && $(PY) fuzz/run.py --seconds $(FUZZ_SMOKE_SECONDS) --out $(ROOT)/build/fuzz $(FUZZ_TARGETS)

fuzz: setup-venv ## every fuzz target for FUZZ_SECONDS each (FUZZ_TARGETS to pick)
	cd proxy && $(PY) fuzz/run.py --seconds $(FUZZ_SECONDS) --out $(ROOT)/build/fuzz $(FUZZ_TARGETS)
