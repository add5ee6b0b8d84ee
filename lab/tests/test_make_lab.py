"""README's lab commands as a user types them: `make lab` (the demo's checks, exit 0), then
`make lab-up` (the six namespaces stay, with medtls running in the box) and `make lab-down` (every
one of them gone). Run through make itself, so a broken recipe fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from medlab.demo import KEEP_DIR, KEEP_PREFIX
from medlab.net import NAMESPACES

ROOT = Path(__file__).resolve().parents[2]
# The venv this test runs in is the one make uses; setup-lab (apt, pip) has run already.
MAKE = ["make", "-s", "--no-print-directory", "-o", "setup-lab", "-o", "setup-venv",
        f"VENV={Path(sys.executable).parent.parent}"]  # fmt: skip


def _make(target: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MAKE, target], cwd=ROOT, capture_output=True, text=True, timeout=240)


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_make_lab_runs_the_demo_and_cleans_up():
    before = _namespaces()
    r = _make("lab")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "7/7 checks passed" in r.stdout, r.stdout
    assert _namespaces() == before  # its per-run namespaces are gone again


@pytest.mark.skipif(KEEP_DIR.exists(), reason=f"a lab kept with `make lab-up` exists: {KEEP_DIR}")
def test_make_lab_up_keeps_the_lab_and_lab_down_removes_it():
    kept = {f"{KEEP_PREFIX}{n}" for n in NAMESPACES}
    try:
        r = _make("lab-up")
        assert r.returncode == 0, r.stdout + r.stderr
        assert kept <= _namespaces(), r.stdout
        assert "lab is up" in r.stdout
    finally:
        r = _make("lab-down")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not kept & _namespaces()
    assert not KEEP_DIR.exists()
