"""Test PKI: root CA -> intermediate -> leaves (RSA and ECDSA), expired and untrusted certs."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)


def _key(kind: str):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Hospital"),
        ]
    )


@dataclass
class Issued:
    cert: x509.Certificate
    key: object


def make_ca(cn: str, issuer: Issued | None = None, kind: str = "ec") -> Issued:
    key = _key(kind)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def make_leaf(
    cn: str,
    issuer: Issued,
    kind: str = "ec",
    ips: tuple[str, ...] = ("127.0.0.1",),
    dns: tuple[str, ...] = (),
    uris: tuple[str, ...] = (),
    expired: bool = False,
) -> Issued:
    key = _key(kind)
    if expired:
        nb, na = NOW - dt.timedelta(days=60), NOW - dt.timedelta(days=1)
    else:
        nb, na = NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=365)
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    sans += [x509.DNSName(d) for d in dns]
    sans += [x509.UniformResourceIdentifier(u) for u in uris]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, kind == "rsa", False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def pem_cert(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def pem_key(k, passphrase: bytes | None = None) -> bytes:
    enc = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


class PKI:
    """Writes everything under `d`; attributes are paths."""

    def __init__(self, d: Path):
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.root = make_ca("Test Root CA", kind="ec")
        self.inter = make_ca("Test Intermediate CA", self.root, kind="ec")
        self.rogue_root = make_ca("Rogue CA", kind="ec")
        self.ca = self._write("ca.pem", pem_cert(self.root.cert))
        self.ca_full = self._write(
            "ca-full.pem", pem_cert(self.root.cert) + pem_cert(self.inter.cert)
        )
        self.rogue_ca = self._write("rogue-ca.pem", pem_cert(self.rogue_root.cert))
        self.leaves: dict[str, Issued] = {}
        self.leaf("box-a", kind="ec", dns=("box-a.test",))
        self.leaf("box-b", kind="rsa", dns=("box-b.test",))
        self.leaf("pacs", kind="rsa", dns=("pacs.test",))
        self.leaf("his", kind="ec")
        self.leaf("ris", kind="ec", dns=("ris.test",))
        self.leaf("expired", kind="ec", expired=True)
        self.leaf("rogue", kind="ec", issuer=self.rogue_root)
        self.passphrase = self._write("pass.txt", b"s3cret-pass\n")
        self.enc_key = self._write(
            "box-a-enc.key", pem_key(self.leaves["box-a"].key, b"s3cret-pass")
        )

    def _write(self, name: str, data: bytes) -> Path:
        p = self.dir / name
        p.write_bytes(data)
        p.chmod(0o600)
        return p

    def leaf(self, cn: str, kind: str = "ec", issuer: Issued | None = None, **kw) -> None:
        issuer = issuer or self.inter
        leaf = make_leaf(cn, issuer, kind=kind, **kw)
        self.leaves[cn] = leaf
        chain = pem_cert(leaf.cert)
        if issuer is self.inter:
            chain += pem_cert(self.inter.cert)
        self._write(f"{cn}.crt", chain)
        self._write(f"{cn}-leaf.crt", pem_cert(leaf.cert))
        self._write(f"{cn}.key", pem_key(leaf.key))

    def crt(self, cn: str) -> Path:
        return self.dir / f"{cn}.crt"

    def key(self, cn: str) -> Path:
        return self.dir / f"{cn}.key"
