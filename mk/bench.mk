# Benchmark harness (bench/): medtls vs stunnel vs haproxy vs direct on loopback.
# `make bench` is the full run (minutes, not part of `make test`); `bench-smoke` is a tiny
# end-to-end run in TEST_STAGES so the harness cannot rot unnoticed.
.PHONY: bench bench-smoke
TEST_STAGES += bench-smoke

BENCH_RESULTS ?= bench/results
BENCH_ARGS ?=
BENCH_SMOKE_REQUIRE ?= stunnel,haproxy,medtls

bench: setup-venv ## full benchmark; table to stdout and $(BENCH_RESULTS)/latest.{json,md}
	$(PY) -m bench.run --mode full --out $(BENCH_RESULTS)/latest.json \
		--markdown $(BENCH_RESULTS)/latest.md $(BENCH_ARGS)

bench-smoke: setup-venv ## benchmark harness end to end with tiny sizes (< 60 s)
	timeout 120 $(PY) -m bench.run --mode smoke --require $(BENCH_SMOKE_REQUIRE) \
		--out build/bench/smoke.json --markdown build/bench/smoke.md
