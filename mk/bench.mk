# Benchmark harness (bench/): medtls vs stunnel vs haproxy vs direct on loopback.
# `make bench` is the full run (minutes, not part of `make test`); `bench-smoke` is a tiny
# end-to-end run in TEST_STAGES so the harness cannot rot unnoticed.
.PHONY: bench bench-smoke
TEST_STAGES += bench-smoke

BENCH_RESULTS ?= bench/results
BENCH_ARGS ?=
BENCH_REQUIRE ?= stunnel,haproxy,medtls

bench: setup-venv ## full benchmark; table to stdout and $(BENCH_RESULTS)/latest.{json,md}
	$(PY) -m bench.run --mode full --require $(BENCH_REQUIRE) --out $(BENCH_RESULTS)/latest.json \
		--markdown $(BENCH_RESULTS)/latest.md $(BENCH_ARGS)

bench-smoke: setup-venv ## harness unit tests, then the harness end to end with tiny sizes (< 60 s)
	$(PY) -m pytest -q -p no:cacheprovider bench/tests
	timeout 120 $(PY) -m bench.run --mode smoke --require $(BENCH_REQUIRE) \
		--out build/bench/smoke.json --markdown build/bench/smoke.md
