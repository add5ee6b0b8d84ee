"""The `make audit` summary table from the files the three evidence commands left in build/audit.

    python -m medtls_audit.summary [--out build/audit] [--baseline audit/lynis-baseline.txt]

Exit 1 if any evidence is missing or fails its bar (scan violations, exposure > 2.0, Lynis index
below the committed baseline).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medtls_audit import lynis, unit

EXPOSURE_MAX = 2.0


def tls_rows(out: Path) -> list[tuple[str, str, str, bool]]:
    path = out / "tls-scan.json"
    if not path.exists():
        return [("TLS scan", "missing", f"no {path}", False)]
    rows = []
    for r in json.loads(path.read_text())["scans"]:
        n12, n13 = len(r["tls1_2"]), len(r["tls1_3"])
        value = f"{'+'.join(r['protocols_offered']) or 'none'}; {n12} TLS1.2 + {n13} TLS1.3 suites"
        bar = "only TLS1.2/1.3, exactly the profile's AEAD (EC)DHE suites"
        rows.append((f"TLS {r['profile']} ({r['key']} key)", value, bar, not r["violations"]))
    return rows


def unit_row(out: Path) -> tuple[str, str, str, bool]:
    path = out / "unit-security.txt"
    if not path.exists():
        return ("systemd exposure", "missing", f"no {path}", False)
    score, _ = unit.parse(path.read_text())
    return ("systemd exposure medtls.service", f"{score}", f"<= {EXPOSURE_MAX}", score <= 2.0)


def lynis_rows(out: Path, baseline: Path) -> list[tuple[str, str, str, bool]]:
    base = lynis.parse_baseline(baseline.read_text())
    path = out / "lynis-report.dat"
    if not path.exists():
        return [("Lynis hardening index", "missing", f"no {path}", False)]
    rep = lynis.parse_report(path.read_text())
    bad = lynis.regressions(rep, base)
    return [
        ("Lynis hardening index", f"{rep.index}", f">= baseline {base.index} (goal {lynis.GOAL})",
         rep.index >= base.index),
        ("Lynis warnings", f"{len(rep.warnings)}", f"none beyond the {len(base.warnings)} in "
         "the baseline", not [b for b in bad if b.startswith("new warning")]),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/audit"))
    ap.add_argument("--baseline", type=Path, default=Path("audit/lynis-baseline.txt"))
    args = ap.parse_args(argv)
    rows = [*tls_rows(args.out), unit_row(args.out), *lynis_rows(args.out, args.baseline)]
    report = args.out / "lynis-report.dat"
    if report.exists():
        rep = lynis.parse_report(report.read_text())
        print(f"Lynis {rep.version} on {rep.host} at {rep.date}: {rep.tests_done} tests, index "
              f"{rep.index}; warnings and top suggestions:")  # fmt: skip
        for tid, text in sorted(rep.warnings.items()):
            print(f"  warning    {tid} {text}")
        for line in lynis.top_suggestions(rep):
            print(f"  suggestion {line}")
        print()
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    print(f"{'evidence':<{w}}  {'measured':<{v}}  {'result':<6}  bar")
    for name, value, bar, ok in rows:
        print(f"{name:<{w}}  {value:<{v}}  {'ok' if ok else 'FAIL':<6}  {bar}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
