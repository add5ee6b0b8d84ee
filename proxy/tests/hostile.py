"""CA-signed hostile certificates: built with `cryptography`, then patched and re-signed.

OpenSSL verifies each of these (the chain and signature are good); what is wrong is what a
peer-identity reader meets afterwards: bytes that are not ASCII where IA5 is declared, an
iPAddress of 8 bytes, BER where DER is due, a CA flag, two CNs, a wildcard.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from medtls_testpki import Issued

# A marker the patch overwrites from its start (found exactly once in the TBSCertificate). Long
# enough that random serial, key and signature bytes never contain it by chance.
MARK = "zqmedtlsmarkzq"


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        head = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + head + content


def elements(der: bytes) -> list[bytes]:
    """The DER elements (header included) inside the SEQUENCE `der`."""
    from medtls.core.certparse import _children, _tlv

    _, s, e = _tlv(der, 0, len(der))
    return [der[h:ce] for _, _, ce, h in _children(der, s, e)]


def resign(tbs: bytes, issuer: Issued, alg: bytes) -> bytes:
    """A certificate of the TBSCertificate `tbs`, signed with the issuer's key (`alg`: the DER
    AlgorithmIdentifier, as in the TBSCertificate's signature field)."""
    key = issuer.key
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(tbs, PKCS1v15(), hashes.SHA256())
    else:
        sig = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return tlv(0x30, tbs + alg + tlv(0x03, b"\0" + sig))


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def leaf(
    issuer: Issued,
    key,
    *,
    cns: tuple[str, ...] = ("evil",),
    name: x509.Name | None = None,
    sans: list[x509.GeneralName] | None = None,
    ca: bool = False,
    extensions: tuple = (),
) -> x509.Certificate:
    """A CA-signed leaf good for client and server authentication."""
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, c) for c in cns]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext in extensions:
        b = b.add_extension(ext, critical=False)
    return b.sign(issuer.key, hashes.SHA256())


def mark_overwritten(data: bytes, new: bytes) -> bytes:
    """`data` with the start of its one MARK overwritten by `new` (lengths unchanged)."""
    old = MARK.encode()
    assert data.count(old) == 1 and len(new) <= len(old), (old, new)
    return data.replace(old, new + old[len(new) :])


def patched(cert: x509.Certificate, issuer: Issued, new: bytes):
    """`cert` with the start of MARK in its TBSCertificate overwritten by `new`, re-signed."""
    tbs = cert.tbs_certificate_bytes
    return resign(mark_overwritten(tbs, new), issuer, elements(tbs)[2])


def ber_subject(cert: x509.Certificate, issuer: Issued) -> bytes:
    """`cert` with its subject Name in BER indefinite-length form."""
    parts = elements(cert.tbs_certificate_bytes)
    subject = parts[5]  # version, serial, signature, issuer, validity, subject
    content = subject[2:] if subject[1] < 0x80 else subject[2 + (subject[1] & 0x7F) :]
    parts[5] = b"\x30\x80" + content + b"\x00\x00"
    return resign(tlv(0x30, b"".join(parts)), issuer, parts[2])


def _uri(u: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(u)


def trigger(kind: str, issuer: Issued, key) -> bytes:
    """DER of one hostile certificate of `kind` (see TRIGGERS)."""
    if kind == "ip_8_bytes":
        net = ipaddress.ip_network("198.18.0.0/24")
        return der(leaf(issuer, key, sans=[x509.IPAddress(net)]))
    if kind == "dns_ff":
        c = leaf(issuer, key, sans=[x509.DNSName(f"h{MARK}.test")])
        return patched(c, issuer, b"\xffq")
    if kind == "uri_ff":
        c = leaf(issuer, key, sans=[_uri(f"urn:x:{MARK}")])
        return patched(c, issuer, b"\xffq")
    if kind == "crldp_ff":
        dp = x509.DistributionPoint([_uri(f"http://crl.test/{MARK}")], None, None, None)
        c = leaf(issuer, key, extensions=(x509.CRLDistributionPoints([dp]),))
        return patched(c, issuer, b"\xffq")
    if kind == "aia_ff":
        ad = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, _uri(f"http://ocsp.test/{MARK}")
        )
        c = leaf(issuer, key, extensions=(x509.AuthorityInformationAccess([ad]),))
        return patched(c, issuer, b"\xffq")
    if kind == "utf8_dns_escaped_cn":
        # valid UTF-8 (ü) in an IA5 dNSName, and a CN that needs RFC 4514 escapes
        c = leaf(issuer, key, cns=("evil, Inc.",), sans=[x509.DNSName(f"m{MARK}nchen.test")])
        return patched(c, issuer, "ü".encode())
    if kind == "ber_subject":
        return ber_subject(leaf(issuer, key), issuer)
    if kind == "ca_true":
        return der(leaf(issuer, key, ca=True))
    raise ValueError(kind)


# Refused by the strict reader (result=bad_certificate); the old daemon died on the first seven.
TRIGGERS = (
    "ip_8_bytes",
    "dns_ff",
    "uri_ff",
    "crldp_ff",
    "aia_ff",
    "utf8_dns_escaped_cn",
    "ber_subject",
    "ca_true",
)


def odd_name(rng: random.Random) -> x509.Name:
    """A valid but unusual subject: special characters, several types, a multi-valued RDN."""
    alphabet = " ,+\"\\<>;=#é€\x00abcXYZ019-._*@'"
    rdns = []
    for _ in range(rng.randint(1, 4)):
        attrs = []
        for _ in range(rng.choice((1, 1, 1, 2))):
            oid = rng.choice(
                [NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.LOCALITY_NAME,
                 NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.TITLE]
            )  # fmt: skip
            value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
            attrs.append(x509.NameAttribute(oid, value))
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)


def write_chain(path: Path, cert_der: bytes, issuer: Issued) -> Path:
    """PEM of the leaf (as given, any encoding) and its issuer, for a TLS peer to present."""
    import ssl

    path.write_text(ssl.DER_cert_to_PEM_cert(cert_der) + ssl.DER_cert_to_PEM_cert(der(issuer.cert)))
    return path


def write_key(path: Path, key) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path
