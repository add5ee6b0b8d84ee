"""testssl against the real `medtls run` inbound listener, per production profile and key type.

Evidence for docs/security.md G7: only TLS 1.2/1.3, only the profile's AEAD (EC)DHE suites.
B.13 with an ECDSA key is proxy/tests/test_testssl.py::test_bcp195_modified_offers_exactly_b13;
this covers the other three combinations (`make audit-tls` reports all four).
"""

import pytest
from medtls_audit.tlsscan import Scan, run_scans

B12_TLS13 = ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"]
B13_TLS13 = [*B12_TLS13, "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"]
COMBINATIONS = [("bcp195", "rsa"), ("bcp195", "ec"), ("bcp195-modified", "rsa")]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    todo = [Scan(p, k) for p, k in COMBINATIONS]
    # Negative control: a retired profile that allows TLS 1.0 must be caught (protocols only).
    todo.append(Scan("aes-legacy", "rsa", suites=False))
    return {(s.profile, s.kind): s for s in run_scans(out, todo)}


@pytest.mark.parametrize(("profile", "kind"), COMBINATIONS)
def test_listener_offers_exactly_the_profile(scans, profile, kind):
    s = scans[(profile, kind)]
    assert s.problems == []
    # The scanner has no client certificate: medtls answered its probes but relayed nothing.
    assert s.relayed == 0 and s.refused.get("no_certificate", 0) > 0, s.refused
    assert [p for p, on in s.result.protocols.items() if on] == ["TLS1_2", "TLS1_3"]
    tls13 = sorted(x.iana for x in s.result.suites["TLS1_3"])
    assert tls13 == sorted(B13_TLS13 if profile == "bcp195-modified" else B12_TLS13)
    tls12 = [x.iana for x in s.result.suites["TLS1_2"]]
    assert tls12, "no TLS 1.2 suite offered"
    auth = "_RSA_" if kind == "rsa" else "_ECDSA_"
    for name in tls12:
        assert name.startswith(("TLS_ECDHE_", "TLS_DHE_")) and auth in name, name
        assert "CBC" not in name and not name.endswith("_SHA"), name


def test_b13_offers_ccm_and_b12_does_not(scans):
    def names(profile, kind):
        return {x.iana for x in scans[(profile, kind)].result.suites["TLS1_2"]}

    assert {"TLS_DHE_RSA_WITH_AES_128_CCM", "TLS_DHE_RSA_WITH_AES_256_CCM"} <= names(
        "bcp195-modified", "rsa"
    )
    assert not [n for k in ("rsa", "ec") for n in names("bcp195", k) if "CCM" in n]


def test_scanner_catches_a_legacy_listener(scans):
    s = scans[("aes-legacy", "rsa")]
    assert s.result.protocols["TLS1"] is True
    assert "TLS1: offered" in s.problems
    assert "TLS1_3: offered" not in s.problems  # aes-legacy stops at TLS 1.2
