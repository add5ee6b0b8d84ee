"""Identity matching, ACL and routing decisions without sockets."""

import ssl
from pathlib import Path

import pytest
from medtls.config import AllowRule, Verify, load_config
from medtls.core import events as ev
from medtls.core.certparse import CertParseError
from medtls.core.outcomes import classify_tls_error
from medtls.core.policy import (
    acl_allows,
    allow_rule_matches,
    cert_identity,
    peer_identity,
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


@pytest.mark.parametrize(
    ("reason", "category", "detail"),
    [
        ("SSLV3_ALERT_BAD_CERTIFICATE", ev.PEER_REJECTED,
         "peer rejected our certificate: peer sent alert bad_certificate (42)"),
        ("TLSV1_ALERT_UNKNOWN_CA", ev.PEER_UNKNOWN_CA,
         "peer does not trust our certificate: peer sent alert unknown_ca (48)"),
        ("SSLV3_ALERT_HANDSHAKE_FAILURE", ev.PEER_REJECTED,
         "peer refused the handshake: peer sent alert handshake_failure (40)"),
        ("TLSV1_ALERT_ACCESS_DENIED", ev.PEER_REJECTED,
         "peer denied access: peer sent alert access_denied (49)"),
        ("TLSV13_ALERT_CERTIFICATE_REQUIRED", ev.NO_CERTIFICATE,
         "peer requires a client certificate: peer sent alert certificate_required (116)"),
        ("TLSV1_ALERT_INTERNAL_ERROR", ev.HANDSHAKE_ERROR, "peer sent alert internal_error (80)"),
        ("TLSV1_UNRECOGNIZED_NAME", ev.HANDSHAKE_ERROR, "peer sent alert unrecognized_name (112)"),
        ("TLSV1_ALERT_USER_CANCELLED", ev.HANDSHAKE_ERROR, "peer sent alert user_canceled (90)"),
        ("WRONG_VERSION_NUMBER", ev.NOT_TLS,
         "peer did not speak TLS (plaintext sent to a TLS port?)"),
    ],
)  # fmt: skip
def test_a_received_alert_is_named_with_its_code(reason, category, detail):
    assert classify_tls_error(_err(ssl.SSLError, reason)) == (category, detail)


@pytest.mark.parametrize(
    ("code", "msg", "detail"),
    [
        (10, "certificate has expired", "peer certificate has expired"),
        (9, "certificate is not yet valid", "peer certificate is not yet valid"),
        (10, "expired", "peer certificate expired"),
    ],
)
def test_an_expired_peer_certificate_reads_as_one_sentence(code, msg, detail):
    err = _err(ssl.SSLCertVerificationError, "CERTIFICATE_VERIFY_FAILED", code, msg)
    assert classify_tls_error(err) == (ev.CERT_EXPIRED, detail)


def _der(cert) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def _named(cns=("pacs",), dns=(), ca=False):
    """A certificate with the given CNs (several: one RDN each) and DNS SANs."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), critical=False
        )
    return _der(b.sign(key, hashes.SHA256()))


def test_inbound_dns_rules_match_exactly_no_wildcards():
    wild = cert_identity(_named(dns=("*.test",)))
    exact = cert_identity(_named(dns=("RIS.test",)))
    assert not allow_rule_matches(AllowRule(dns="ris.test"), wild, "198.18.0.1")
    assert allow_rule_matches(AllowRule(dns="ris.test"), exact, "198.18.0.1")  # case-insensitive
    assert not allow_rule_matches(AllowRule(dns="*.test"), exact, "198.18.0.1")
    # outbound verify.dns keeps single-label wildcard matching for server certificates
    assert verify_mismatches(Verify(dns="ris.test"), wild) == []
    assert verify_mismatches(Verify(dns="a.ris.test"), wild) != []


def test_cn_rules_match_a_subject_with_exactly_that_one_cn():
    two = cert_identity(_named(cns=("box-a", "evil")))
    assert two.cns == ("box-a", "evil")
    for cn in ("box-a", "evil"):
        assert not allow_rule_matches(AllowRule(cn=cn), two, "198.18.0.1")
        assert verify_mismatches(Verify(cn=cn), two) != []
    one = cert_identity(_named(cns=("box-a",)))
    assert allow_rule_matches(AllowRule(cn="box-a"), one, "198.18.0.1")
    assert verify_mismatches(Verify(cn="box-a"), one) == []
    assert not allow_rule_matches(AllowRule(cn="box-a"), cert_identity(_named(cns=())), "x")


def test_a_ca_certificate_is_refused_as_a_peer_identity(monkeypatch):
    monkeypatch.setattr("medtls.core.policy._identities", {})
    der = _named(cns=("box-a",), ca=True)
    assert cert_identity(der).ca
    for _ in range(2):  # the refusal is remembered, and raised again
        with pytest.raises(CertParseError, match="CA certificate"):
            peer_identity(der)
    assert not peer_identity(_named(cns=("box-a",))).ca


def test_malformed_peer_certificate_is_a_parse_error_not_a_crash(monkeypatch):
    monkeypatch.setattr("medtls.core.policy._identities", {})
    der = _named(dns=("ris.test",))
    i = der.index(b"ris.test")
    hostile = der[:i] + b"r\xffs.test" + der[i + 8 :]
    with pytest.raises(CertParseError, match="IA5"):
        peer_identity(hostile)
