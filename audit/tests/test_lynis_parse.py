"""Lynis report and baseline handling (used by molecule/default/tests/test_lynis.py)."""

from pathlib import Path

import pytest
from medtls_audit import lynis, unit

BASELINE = Path(__file__).resolve().parents[1] / "lynis-baseline.txt"

REPORT = """\
lynis_version=3.0.8
lynis_tests_done=240
warning[]=PKGS-7388|Can't find any security repository in /etc/apt/sources.list|-|-|
suggestion[]=SSH-7408|Consider hardening SSH configuration|AllowTcpForwarding (set YES to NO)|-|
suggestion[]=BOOT-5264|Consider hardening system services|-|-|
hardening_index=78
"""


def test_report_parsed():
    rep = lynis.parse_report(REPORT)
    assert (rep.index, rep.tests_done, rep.version) == (78, 240, "3.0.8")
    assert rep.warnings == {
        "PKGS-7388": "Can't find any security repository in /etc/apt/sources.list"
    }
    assert lynis.top_suggestions(rep, 1) == ["SSH-7408 Consider hardening SSH configuration"]


def test_report_without_index_is_an_error():
    with pytest.raises(ValueError, match="hardening_index"):
        lynis.parse_report("lynis_version=3.0.8\n")


def test_committed_baseline_parses_and_meets_nothing_less_than_itself():
    base = lynis.parse_baseline(BASELINE.read_text())
    assert 0 < base.index <= 100
    rep = lynis.Report(index=base.index, warnings=dict.fromkeys(base.warnings, "x"))
    assert lynis.regressions(rep, base) == []


def test_lower_index_and_new_warning_are_regressions():
    base = lynis.parse_baseline("hardening_index: 80\nwarning: PKGS-7388 no security repo\n")
    rep = lynis.parse_report(REPORT.replace("PKGS-7388", "AUTH-9216"))
    assert lynis.regressions(rep, base) == [
        "hardening index 78 < baseline 80",
        "new warning AUTH-9216: Can't find any security repository in /etc/apt/sources.list",
    ]


def test_baseline_round_trip_and_bad_key():
    rep = lynis.parse_report(REPORT)
    base = lynis.parse_baseline(lynis.render_baseline(rep, "measured here"))
    assert (base.index, base.warnings) == (78, {"PKGS-7388"})
    with pytest.raises(ValueError, match="line 1: unknown key 'hardening'"):
        lynis.parse_baseline("hardening: 80\n")


def test_exposure_parsed():
    text = (
        "✗ PrivateNetwork=   Service has access to the host's network   0.5\n"
        "✓ UMask=   Files created by service are accessible only by its user\n"
        "\n→ Overall exposure level for medtls.service: 1.8 OK :-)\n"
    )
    score, unmet = unit.parse(text)
    assert score == 1.8
    assert unmet == ["PrivateNetwork=  Service has access to the host's network  0.5"]


def test_closed_suggestion_reopened_only_for_its_details():
    rep = lynis.parse_report(
        REPORT.replace("AllowTcpForwarding (set YES to NO)", "MaxSessions (set 4 to 2)")
    )
    assert lynis.reopened(rep) == ["SSH-7408 MaxSessions (set 4 to 2)"]
    port = lynis.parse_report(
        REPORT.replace("AllowTcpForwarding (set YES to NO)", "Port (set 22 to )")
    )
    assert lynis.reopened(port) == []
