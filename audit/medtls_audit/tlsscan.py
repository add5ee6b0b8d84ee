"""Scan the real `medtls run` inbound listener of each production profile with testssl.

For every profile and key type (an RSA and an ECDSA identity: a server can only offer the TLS 1.2
suites its key can sign) one medtls process listens on loopback in explicit mode, requiring client
certificates as in production; testssl enumerates protocols and suites from the ServerHello, so
the missing client certificate does not hide anything. All scans run in parallel.

    python -m medtls_audit.tlsscan [--out build/audit] [--profile NAME ...]

Writes <out>/tls/<profile>-<kind>.json (raw testssl), <out>/tls-scan.json and <out>/tls-scan.txt;
exits 1 if any scan violates its profile.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from medtls_audit.pki import KINDS, make_pki
from medtls_audit.tlspolicy import ScanResult, expected, parse_testssl, violations

PRODUCTION_PROFILES = ("bcp195", "bcp195-modified")
TESTSSL = ["testssl", "--quiet", "--color", "0", "--mapping", "iana", "--nodns", "none", "-p"]
TESTSSL_FAILED = 240


@dataclass
class Scan:
    profile: str
    kind: str
    port: int = 0
    seconds: float = 0.0
    result: ScanResult | None = None
    problems: list[str] | None = None
    suites: bool = True  # False: protocols only (-p without -E)
    refused: dict[str, int] = field(default_factory=dict)  # medtls refusal reason -> count
    relayed: int = 0  # connections medtls carried to the device (must stay 0: no certificate)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(pki: dict[str, Path], profile: str, kind: str, port: int) -> dict:
    return {
        "device": {"ip": "127.0.0.1"},
        "mode": "explicit",
        "identity": {"certificate": str(pki[f"{kind}.crt"]), "key": str(pki[f"{kind}.key"])},
        "trust": {"ca": str(pki["ca"])},
        "tls": {"profile": profile},
        # Nothing is relayed: the scanner never presents a client certificate.
        "inbound": [
            {
                "name": "scan",
                "listen": f"127.0.0.1:{port}",
                "device_port": _free_port(),
                "allow": [{"cn": "audit-client"}],
            }
        ],
        "logging": {"level": "warning"},
        # The build host's clock may be unsynchronised; the gate would refuse before TLS starts.
        "clock": {"require_sync": False},
        "metrics": {"enabled": False},
        "audit": {"transport": "none"},
    }


def _medtls_cmd() -> list[str]:
    exe = shutil.which("medtls")
    return [exe] if exe else [sys.executable, "-m", "medtls.cli"]


def _start_medtls(cfg_path: Path, log_path: Path, port: int) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [*_medtls_cmd(), "run", "--config", str(cfg_path), "--log-level", "info"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"medtls exited {proc.returncode}: {log_path.read_text().strip()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"medtls did not listen on 127.0.0.1:{port}: {log_path.read_text()}")


def run_one(scan: Scan, pki: dict[str, Path], work: Path, out: Path) -> Scan:
    tag = f"{scan.profile}-{scan.kind}"
    proc = None
    for _attempt in range(3):  # a port picked free can be taken before medtls binds it
        scan.port = _free_port()
        cfg = work / f"{tag}.yaml"
        data = _config(pki, scan.profile, scan.kind, scan.port)
        # Scans run side by side: each medtls needs its own control socket.
        data["control"] = {"socket": str(work / f"{tag}.control.sock")}
        cfg.write_text(yaml.safe_dump(data))
        try:
            proc = _start_medtls(cfg, out / "tls" / f"{tag}.medtls.log", scan.port)
            break
        except RuntimeError as e:
            if "already in use" not in str(e):
                raise
    if proc is None:
        raise RuntimeError(f"{tag}: no free port for medtls")
    raw = out / "tls" / f"{tag}.json"
    raw.unlink(missing_ok=True)
    t0 = time.monotonic()
    try:
        ts = subprocess.run(
            [*TESTSSL, *(["-E"] if scan.suites else []), "-oj", str(raw), f"127.0.0.1:{scan.port}"],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    scan.seconds = time.monotonic() - t0
    log = (out / "tls" / f"{tag}.medtls.log").read_text(errors="replace")
    results = re.findall(r"^.*\bevent=connection\b.*\bresult=(\w+)", log, re.MULTILINE)
    for reason in results:
        if reason != "ok":
            scan.refused[reason] = scan.refused.get(reason, 0) + 1
    scan.relayed = results.count("ok")
    (out / "tls" / f"{tag}.testssl.txt").write_text(ts.stdout + ts.stderr)
    findings = json.loads(raw.read_text()) if raw.exists() else []
    scan.result = parse_testssl(findings)
    # testssl's exit status sums its checks' results; only 240+ means the scan itself failed.
    if ts.returncode >= TESTSSL_FAILED or not findings:
        scan.result.errors.append(f"testssl exited {ts.returncode}, {len(findings)} findings")
    scan.problems = violations(scan.result, scan.profile, expected(scan.profile, scan.kind))
    return scan


def run_scans(out: Path, scans: list[Scan]) -> list[Scan]:
    (out / "tls").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medtls-audit-") as tmp:
        work = Path(tmp)
        pki = make_pki(work / "pki")
        with ThreadPoolExecutor(max_workers=len(scans)) as pool:
            return list(pool.map(lambda s: run_one(s, pki, work, out), scans))


def summary(scans: list[Scan]) -> dict:
    rows = []
    for s in scans:
        r = s.result or ScanResult()
        rows.append(
            {
                "profile": s.profile,
                "key": s.kind,
                "protocols_offered": [p for p, on in r.protocols.items() if on],
                "protocols_not_offered": [p for p, on in r.protocols.items() if not on],
                "tls1_2": [f"{x.iana} ({x.kx})" for x in r.suites.get("TLS1_2", [])],
                "tls1_3": [f"{x.iana} ({x.kx})" for x in r.suites.get("TLS1_3", [])],
                "violations": s.problems or [],
                "medtls_refused": s.refused,
                "medtls_relayed": s.relayed,
                "seconds": round(s.seconds, 1),
            }
        )
    return {"tool": "testssl " + _testssl_version(), "scans": rows}


def _testssl_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "testssl.sh"],
                             capture_output=True, text=True, check=False).stdout  # fmt: skip
    except OSError:
        out = ""
    return out or "?"


def render(doc: dict) -> str:
    lines = [
        f"TLS scan of the medtls inbound listener ({doc['tool']}, client certificate required)"
    ]
    for r in doc["scans"]:
        verdict = "OK" if not r["violations"] else f"FAIL ({len(r['violations'])})"
        lines.append(f"\n[{r['profile']} / {r['key']} key] {verdict}  ({r['seconds']} s)")
        lines.append(f"  offered:     {' '.join(r['protocols_offered'])}")
        lines.append(f"  not offered: {' '.join(r['protocols_not_offered'])}")
        for proto in ("tls1_2", "tls1_3"):
            lines.append(f"  {proto.upper()} suites:")
            lines += [f"    {x}" for x in r[proto]]
        refused = ", ".join(f"{k} {v}" for k, v in sorted(r["medtls_refused"].items()))
        lines.append(f"  medtls: relayed {r['medtls_relayed']}, refused {refused}")
        lines += [f"  VIOLATION: {v}" for v in r["violations"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/audit"))
    ap.add_argument("--profile", action="append", choices=PRODUCTION_PROFILES)
    args = ap.parse_args(argv)
    if not shutil.which("testssl"):
        print("error: testssl not found (apt-get install testssl.sh)", file=sys.stderr)
        return 2
    try:
        profiles = args.profile or PRODUCTION_PROFILES
        scans = run_scans(args.out, [Scan(p, k) for p in profiles for k in KINDS])
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    doc = summary(scans)
    (args.out / "tls-scan.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = render(doc)
    (args.out / "tls-scan.txt").write_text(text)
    print(text, end="")
    return 1 if any(r["violations"] for r in doc["scans"]) else 0


if __name__ == "__main__":
    sys.exit(main())
