"""Lynis hardening index of the converged appliance against the committed baseline.

Debian's lynis package comes from the controller (the container has no Debian mirror) and is
unpacked, not installed, so the audit does not change the package state it reports on. The report
is copied to build/audit/ for `make audit`. Baseline: audit/lynis-baseline.txt (goal: 85).
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "audit"))

from medtls_audit import lynis  # noqa: E402

OUT = ROOT / "build" / "audit"


@pytest.fixture(scope="module")
def report(host):
    container = host.backend.get_hostname()
    lynis.copy_into_container(lynis.find_deb(OUT / "cache"), container)
    host.run_expect([0], lynis.UNPACK_CMD)
    run = host.run(lynis.LYNIS_CMD)
    assert run.rc == 0, run.stdout + run.stderr
    text = host.file(f"{lynis.REMOTE_DIR}/lynis-report.dat").content_string
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lynis-report.dat").write_text(text)
    (OUT / "lynis-output.txt").write_text(run.stdout)
    return lynis.parse_report(text)


@pytest.fixture(scope="module")
def baseline():
    return lynis.parse_baseline((ROOT / "audit" / "lynis-baseline.txt").read_text())


def test_lynis_index_not_below_baseline(report, baseline):
    print(f"lynis hardening index {report.index} (baseline {baseline.index}, goal {lynis.GOAL})")
    assert report.index >= baseline.index, lynis.regressions(report, baseline)


def test_lynis_no_new_warnings(report, baseline):
    new = sorted(set(report.warnings) - baseline.warnings)
    assert not new, lynis.regressions(report, baseline)


def test_lynis_closed_suggestions_stay_closed(report):
    # Each measure of the hardening role that Lynis checks: removing one brings its suggestion back.
    assert lynis.reopened(report) == []


def test_medtls_service_account_cannot_log_in_but_runs(host):
    # Hardening must not lock out the service user: no password, no shell, no expiry, running.
    entry = host.check_output("getent shadow medtls").split(":")
    assert entry[1].startswith(("!", "*")) and entry[4] in ("", "-1", "99999")
    assert host.user("medtls").shell in ("/usr/sbin/nologin", "/bin/false")
    assert host.service("medtls.service").is_running
