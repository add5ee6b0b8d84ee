"""Run the atheris targets in this folder, each in its own process, for a bounded time.

    python fuzz/run.py --seconds 10              # every target
    python fuzz/run.py --seconds 600 certparse   # one target, longer

Exit status is non-zero when any target found a crash (its input is kept under --out).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def targets(names: list[str]) -> list[Path]:
    found = sorted(HERE.glob("fuzz_*.py"))
    if not names:
        return found
    by_name = {p.stem.removeprefix("fuzz_"): p for p in found}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        sys.exit(f"fuzz: unknown target(s) {', '.join(unknown)}; have {', '.join(sorted(by_name))}")
    return [by_name[n] for n in names]


def run_one(target: Path, seconds: int, out: Path) -> tuple[str, int, float]:
    name = target.stem.removeprefix("fuzz_")
    work = out / name
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = HERE / "seeds" / name
    dirs = [str(corpus)] + ([str(seeds)] if seeds.is_dir() else [])
    cmd = [
        sys.executable, str(target),
        f"-max_total_time={seconds}", "-rss_limit_mb=2048", "-timeout=10",
        f"-artifact_prefix={work}/", "-print_final_stats=1", *dirs,
    ]  # fmt: skip
    t0 = time.monotonic()
    log = work / "log.txt"
    with open(log, "wb") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=seconds + 120)
    runs = "?"
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("stat::number_of_executed_units:"):
            runs = line.split(":")[-1].strip()
    return runs, rc, time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("build/fuzz"))
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    failed = 0
    for target in targets(args.names):
        runs, rc, took = run_one(target, args.seconds, args.out)
        name = target.stem.removeprefix("fuzz_")
        verdict = "ok" if rc == 0 else f"CRASH (exit {rc}; see {args.out / name})"
        print(f"fuzz {name:<14} {runs:>9} inputs in {took:5.1f}s  {verdict}", flush=True)
        failed |= rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
