"""The stdlib DER reader gives the same identity facts as `cryptography` (which tests may use)."""

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from medtls.core.certparse import CertParseError, parse_der, pem_certificates
from medtls.core.policy import cert_identity

N = NameOID
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

SUBJECTS = {
    "plain": [x509.NameAttribute(N.COMMON_NAME, "pacs"), x509.NameAttribute(N.COUNTRY_NAME, "DE")],
    "escapes": [
        x509.NameAttribute(N.COMMON_NAME, ' #a,b+c;d<e>f"g\\h '),
        x509.NameAttribute(N.ORGANIZATION_NAME, "Klinik Süd"),
    ],
    "unknown_types": [
        x509.NameAttribute(N.EMAIL_ADDRESS, "it@example.org"),
        x509.NameAttribute(N.SERIAL_NUMBER, "42"),
        x509.NameAttribute(N.DOMAIN_COMPONENT, "org"),
        x509.NameAttribute(N.USER_ID, "u1"),
        x509.NameAttribute(N.COMMON_NAME, "x"),
    ],
    "multi_valued": [
        x509.RelativeDistinguishedName(
            [x509.NameAttribute(N.COMMON_NAME, "a"), x509.NameAttribute(N.SURNAME, "b")]
        ),
        x509.RelativeDistinguishedName([x509.NameAttribute(N.ORGANIZATIONAL_UNIT_NAME, "Rad")]),
    ],
    "bmp": [x509.NameAttribute(N.COMMON_NAME, "ümlaut", _type=x509.name._ASN1Type.BMPString)],
}
SANS = {
    "plain": [x509.DNSName("PACS.Example"), x509.IPAddress(ipaddress.ip_address("198.18.0.20"))],
    "escapes": [x509.IPAddress(ipaddress.ip_address("2001:db8::1")), x509.RFC822Name("a@b.c")],
    "unknown_types": [x509.UniformResourceIdentifier("urn:oid:1.2.3"), x509.DNSName("*.x.org")],
    "multi_valued": None,
    "bmp": [],
}


def _cert(name: str, kind: str, not_after: dt.datetime = NOW) -> x509.Certificate:
    key = (
        rsa.generate_private_key(65537, 2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP384R1() if kind == "p384" else ec.SECP256R1())
    )
    subject = x509.Name(SUBJECTS[name])
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(N.COMMON_NAME, "ca")]))
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(not_after)
    )
    if SANS[name]:
        b = b.add_extension(x509.SubjectAlternativeName(SANS[name]), critical=False)
    if SANS[name] is None:  # a certificate with other extensions but no SAN
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    return b.sign(key, hashes.SHA256())


def _reference(cert: x509.Certificate):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        dns = ips = uris = ()
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cns = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(N.COMMON_NAME))
    return cert.subject.rfc4514_string(), cns, dns, ips, uris, cert.not_valid_after_utc, spki


@pytest.mark.parametrize("kind", ["ec", "rsa", "p384"])
@pytest.mark.parametrize("name", sorted(SUBJECTS))
def test_same_facts_as_cryptography(name, kind):
    cert = _cert(name, kind)
    f = parse_der(cert.public_bytes(serialization.Encoding.DER))
    assert (f.subject, f.cns, f.dns, f.ips, f.uris, f.not_after, f.spki) == _reference(cert)


def test_utctime_and_generalizedtime():
    for year in (2049, 2050, 2051):  # UTCTime up to 2049, GeneralizedTime from 2050
        end = dt.datetime(year, 6, 1, tzinfo=dt.UTC)
        f = parse_der(_cert("plain", "ec", end).public_bytes(serialization.Encoding.DER))
        assert f.not_after == end


def test_policy_identity_and_spki_pin():
    cert = _cert("plain", "ec")
    ident = cert_identity(cert.public_bytes(serialization.Encoding.DER))
    assert ident.subject == "C=DE,CN=pacs"
    assert ident.dns == ("pacs.example",)  # lower-cased for matching
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ident.spki_sha256 == __import__("hashlib").sha256(spki).hexdigest()


def test_pem_bundle_in_order():
    a, b = _cert("plain", "ec"), _cert("bmp", "ec")
    pem = (
        b"junk\n"
        + a.public_bytes(serialization.Encoding.PEM)
        + b.public_bytes(serialization.Encoding.PEM)
    )
    ders = pem_certificates(pem)
    assert ders == [c.public_bytes(serialization.Encoding.DER) for c in (a, b)]


@pytest.mark.parametrize(
    "junk", [b"", b"\x30", b"\x30\x03\x02\x01", b"\x04\x02ab", b"\x30\x84\xff"]
)
def test_garbage_is_a_parse_error(junk):
    with pytest.raises(CertParseError):
        parse_der(junk)
