"""A throwaway lab PKI: one CA and the node certificates the lab and Mallory use."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# name -> (CN, IP SAN); all issued by the lab CA unless listed in SELF_SIGNED.
NODES = {
    "device": ("ct-modality", "198.18.0.10"),
    "pacs": ("pacs", "198.18.0.20"),
    "his": ("his", "198.18.0.30"),
    "mallory": ("mallory", "198.18.0.66"),
    "mallory-selfsigned": ("pacs", "198.18.0.20"),
}
SELF_SIGNED = {"mallory-selfsigned"}


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "medtls lab"),
        ]
    )


def _write_key(path: Path, key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _cert(subject_cn, ip, key, issuer_name, issuer_key, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject_cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(out: Path) -> Path:
    """Writes ca.crt, ca.key and NAME.crt/NAME.key for every node into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("medtls lab CA", None, ca_key, _name("medtls lab CA"), ca_key, ca=True)
    (out / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(out / "ca.key", ca_key)
    for name, (cn, ip) in NODES.items():
        key = ec.generate_private_key(ec.SECP256R1())
        if name in SELF_SIGNED:
            cert = _cert(cn, ip, key, _name(cn), key, ca=False)
        else:
            cert = _cert(cn, ip, key, ca.subject, ca_key, ca=False)
        (out / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(out / f"{name}.key", key)
    return out
