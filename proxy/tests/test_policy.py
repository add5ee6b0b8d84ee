"""Identity matching, ACL and routing decisions without sockets."""

import ssl
from pathlib import Path

import pytest
from medtls import events as ev
from medtls.config import AllowRule, Verify, load_config
from medtls.daemon import classify_tls_error
from medtls.policy import (
    acl_allows,
    allow_rule_matches,
    cert_identity,
    identity_from_peercert,
    route_inbound,
    route_outbound,
    verify_mismatches,
)
from pki import make_ca, make_leaf

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ct-modality.yaml"


@pytest.fixture(scope="module")
def ident():
    root = make_ca("Root")
    leaf = make_leaf(
        "pacs", root, ips=("198.18.0.20",), dns=("*.pacs.example",), uris=("urn:oid:1.2.3",)
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert_identity(leaf.cert.public_bytes(Encoding.DER))


def test_identity_fields(ident):
    assert ident.cns == ("pacs",)
    assert ident.ips == ("198.18.0.20",)
    assert ident.subject == "O=Test Hospital,CN=pacs"
    assert len(ident.spki_sha256) == 64


@pytest.mark.parametrize(
    ("verify", "ok"),
    [
        (Verify(ip="198.18.0.20"), True),
        (Verify(ip="198.18.0.21"), False),
        (Verify(cn="pacs"), True),
        (Verify(cn="PACS"), False),
        (Verify(dns="a.pacs.example"), True),  # wildcard SAN
        (Verify(dns="a.b.pacs.example"), False),  # wildcard covers one label only
        (Verify(subject="CN=pacs, O=Test Hospital"), True),  # order/space-insensitive
        (Verify(subject="CN=pacs"), False),
        (Verify(ip="198.18.0.20", cn="his"), False),  # all given fields must match
        (Verify(spki_sha256="0" * 64), False),
    ],
)
def test_verify(ident, verify, ok):
    assert (verify_mismatches(verify, ident) == []) is ok


def test_verify_spki_pin(ident):
    assert verify_mismatches(Verify(spki_sha256=ident.spki_sha256), ident) == []


def test_acl_entries_and_source_ip(ident):
    assert allow_rule_matches(AllowRule(cn="pacs", ip="198.18.0.20"), ident, "198.18.0.20")
    assert not allow_rule_matches(AllowRule(cn="pacs", ip="198.18.0.20"), ident, "198.18.0.99")
    assert allow_rule_matches(AllowRule(uri="urn:oid:1.2.3"), ident, "1.1.1.1")
    assert allow_rule_matches(AllowRule(ip_san="198.18.0.20"), ident, "1.1.1.1")
    assert not allow_rule_matches(AllowRule(cn="pacs", dns="ris.hospital.example"), ident, "x")


def test_acl_several_identities_per_port_default_deny(ident):
    cfg = load_config(EXAMPLE, check_files=False)
    dicom = route_inbound(cfg, 2762)
    assert acl_allows(dicom, ident, "198.18.0.20") == 0
    assert acl_allows(dicom, ident, "198.18.0.77") is None  # cn ok but wrong source
    hl7 = route_inbound(cfg, 2576)
    assert acl_allows(hl7, ident, "198.18.0.20") is None
    assert route_inbound(cfg, 9999) is None


def test_outbound_route_default_deny():
    cfg = load_config(EXAMPLE, check_files=False)
    assert route_outbound(cfg, "198.18.0.20", 104).name == "pacs"
    assert route_outbound(cfg, "198.18.0.30", 2575).name == "his"
    assert route_outbound(cfg, "198.18.0.20", 2575) is None
    assert route_outbound(cfg, "198.18.0.99", 104) is None


def _err(cls, reason, code=None, msg=None):
    e = cls(1, "x")
    e.reason = reason
    if code is not None:
        e.verify_code, e.verify_message = code, msg
    return e


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (
            _err(ssl.SSLCertVerificationError, "CERTIFICATE_VERIFY_FAILED", 20, "unable"),
            ev.UNKNOWN_CA,
        ),
        (
            _err(ssl.SSLCertVerificationError, "CERTIFICATE_VERIFY_FAILED", 10, "expired"),
            ev.CERT_EXPIRED,
        ),
        (_err(ssl.SSLError, "PEER_DID_NOT_RETURN_A_CERTIFICATE"), ev.NO_CERTIFICATE),
        (_err(ssl.SSLError, "UNSUPPORTED_PROTOCOL"), ev.PROTOCOL_VERSION),
        (_err(ssl.SSLError, "WRONG_VERSION_NUMBER"), ev.NOT_TLS),
        (_err(ssl.SSLError, "TLSV1_ALERT_UNKNOWN_CA"), ev.PEER_UNKNOWN_CA),  # they distrust us
        (
            _err(ssl.SSLCertVerificationError, "CERTIFICATE_VERIFY_FAILED", 26, "purpose"),
            ev.CERT_PURPOSE,
        ),
        (_err(ssl.SSLError, "SSLV3_ALERT_CERTIFICATE_EXPIRED"), ev.PEER_CERT_EXPIRED),
        (_err(ssl.SSLError, "SSLV3_ALERT_CERTIFICATE_REVOKED"), ev.PEER_CERT_REVOKED),
        (_err(ssl.SSLError, "TLSV13_ALERT_CERTIFICATE_REQUIRED"), ev.NO_CERTIFICATE),
    ],
)
def test_tls_error_categories(err, reason):
    assert classify_tls_error(err)[0] == reason


def test_fast_identity_equals_full_parse(pki):
    import ssl

    # what ssl's getpeercert() returns for the same certificates
    for cn in ("box-a", "box-b", "pacs", "ris"):
        der = pki.leaves[cn].cert.public_bytes(
            __import__("cryptography").hazmat.primitives.serialization.Encoding.DER
        )
        info = ssl._ssl._test_decode_cert(str(pki.dir / f"{cn}-leaf.crt"))
        fast = identity_from_peercert(info, der)
        full = cert_identity(der)
        assert fast == full
        assert fast.spki_sha256 == full.spki_sha256
