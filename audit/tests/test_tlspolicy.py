"""The scan checker without sockets, on real testssl output recorded from a medtls listener."""

import copy
import json
from pathlib import Path

import pytest
from medtls_audit.tlspolicy import expected, parse_testssl, violations

DATA = Path(__file__).parent / "data"


def load(name):
    return json.loads((DATA / f"testssl-{name}.json").read_text())


def suite(proto, code, iana, kx="ECDH 253"):
    return {
        "id": f"cipher-{proto}_x{code:x}",
        "severity": "INFO",
        "finding": f"TLS 1.x   x{code:x}   {iana}   {kx}   AESGCM   256   OPENSSL-NAME",
    }


@pytest.mark.parametrize(
    ("name", "profile", "kind"),
    [("bcp195-rsa", "bcp195", "rsa"), ("bcp195-modified-ec", "bcp195-modified", "ec")],
)
def test_recorded_scans_are_compliant(name, profile, kind):
    res = parse_testssl(load(name))
    assert violations(res, profile, expected(profile, kind)) == []
    assert res.protocols == {
        "SSLv2": False, "SSLv3": False, "TLS1": False, "TLS1_1": False,
        "TLS1_2": True, "TLS1_3": True,
    }  # fmt: skip


def test_expected_sets_follow_the_key_type():
    rsa, ec = expected("bcp195-modified", "rsa"), expected("bcp195-modified", "ec")
    assert 0xC0AE in ec["TLS1_2"] and 0xC0AE not in rsa["TLS1_2"]  # ECDHE-ECDSA-AES128-CCM8
    assert 0x9E in rsa["TLS1_2"] and 0x9E not in ec["TLS1_2"]  # DHE-RSA-AES128-GCM-SHA256
    assert rsa["TLS1_3"] == ec["TLS1_3"] == {0x1301, 0x1302, 0x1303, 0x1304, 0x1305}


def flip(findings, fid, finding):
    out = copy.deepcopy(findings)
    for f in out:
        if f["id"] == fid:
            f["finding"] = finding
    return out


def test_old_protocol_offered_is_a_violation():
    res = parse_testssl(flip(load("bcp195-rsa"), "TLS1_1", "offered"))
    assert violations(res, "bcp195", expected("bcp195", "rsa")) == ["TLS1_1: offered"]


def test_tls13_missing_is_a_violation():
    res = parse_testssl(flip(load("bcp195-rsa"), "TLS1_3", "not offered"))
    assert "TLS1_3: not offered" in violations(res, "bcp195", expected("bcp195", "rsa"))


def test_cbc_or_static_rsa_suite_is_a_violation():
    findings = [
        *load("bcp195-rsa"),
        suite("tls1_2", 0xC027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"),
        suite("tls1_2", 0x9C, "TLS_RSA_WITH_AES_128_GCM_SHA256", kx="RSA"),
    ]
    bad = violations(parse_testssl(findings), "bcp195", expected("bcp195", "rsa"))
    assert "TLS1_2: unexpected suite TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256 (0xc027)" in bad
    assert "TLS1_2: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256 is not (EC)DHE with an AEAD cipher" in bad
    assert "TLS1_2: TLS_RSA_WITH_AES_128_GCM_SHA256 is not (EC)DHE with an AEAD cipher" in bad


def test_missing_profile_suite_and_weak_dh_are_violations():
    findings = [f for f in load("bcp195-rsa") if f["id"] != "cipher-tls1_2_xc030"]
    findings = flip(
        findings,
        "cipher-tls1_2_x9e",
        "TLS 1.2   x9e   TLS_DHE_RSA_WITH_AES_128_GCM_SHA256   DH 1024   AESGCM  128  X",
    )
    bad = violations(parse_testssl(findings), "bcp195", expected("bcp195", "rsa"))
    assert "TLS1_2: profile suite 0xc030 not offered" in bad
    assert "TLS1_2: TLS_DHE_RSA_WITH_AES_128_GCM_SHA256 key exchange DH 1024 below 2048 bits" in bad


def test_tls13_ccm_outside_b13_is_a_violation():
    findings = [*load("bcp195-rsa"), suite("tls1_3", 0x1304, "TLS_AES_128_CCM_SHA256")]
    bad = violations(parse_testssl(findings), "bcp195", expected("bcp195", "rsa"))
    assert "TLS1_3: unexpected suite TLS_AES_128_CCM_SHA256 (0x1304)" in bad
    assert any(v.startswith("TLS1_3: suites") and "differ from PS3.15" in v for v in bad)


def test_scanner_that_reported_nothing_is_a_violation():
    bad = violations(parse_testssl([]), "bcp195", expected("bcp195", "rsa"))
    assert "TLS1_2: not reported by the scanner" in bad
    assert "TLS1_3: profile suite 0x1301 not offered" in bad
