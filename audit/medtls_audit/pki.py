"""A throwaway PKI for scanning a loopback listener: one EC root, one RSA and one EC leaf."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KINDS = ("rsa", "ec")


def _key(kind: str):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer, pub, signer, ca: bool, rsa_leaf: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        b = (
            b.add_extension(
                x509.KeyUsage(True, False, rsa_leaf, False, False, False, False, False, False),
                True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False,
            )
        )
    return b.sign(signer, hashes.SHA256())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def make_pki(d: Path) -> dict[str, Path]:
    """Write ca.pem and <kind>.crt/<kind>.key for every kind in KINDS; return their paths."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key = _key("ec")
    ca = _cert(_name("medtls audit CA"), _name("medtls audit CA"), ca_key.public_key(), ca_key,
               ca=True)  # fmt: skip
    paths = {"ca": _write(d / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))}
    for kind in KINDS:
        key = _key(kind)
        leaf = _cert(_name(f"audit-{kind}"), ca.subject, key.public_key(), ca_key, ca=False,
                     rsa_leaf=kind == "rsa")  # fmt: skip
        paths[f"{kind}.crt"] = _write(
            d / f"{kind}.crt", leaf.public_bytes(serialization.Encoding.PEM)
        )
        paths[f"{kind}.key"] = _write(
            d / f"{kind}.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return paths
