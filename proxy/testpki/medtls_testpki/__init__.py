"""Throwaway X.509 PKIs for medtls's tests, lab, benchmark, audit scans and image tests.

Development only. It sits beside the `medtls` package, not in it: the appliance is given
proxy/medtls alone, the serving process never loads `cryptography`, and
tests/test_testpki.py fails if anything under medtls/ imports this package.

Keys are ECDSA P-256 ("ec", or "ecdsa") or RSA 2048 ("rsa"), signatures SHA-256. Validity is
in days relative to now: `not_before_days=-1, days=90` is valid from yesterday for 90 days;
EXPIRED and NOT_YET_VALID are ready-made windows (`make_leaf(..., **EXPIRED)`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

KEY_TYPES = ("ec", "ecdsa", "rsa")
EKUS = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
HOUR = 1 / 24
EXPIRED = {"not_before_days": -60, "days": -1}
NOT_YET_VALID = {"not_before_days": 30, "days": 90}


def new_key(key_type: str = "ec") -> PrivateKey:
    if key_type in ("ec", "ecdsa"):
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r} (expected one of {', '.join(KEY_TYPES)})")


def name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


@dataclass(frozen=True)
class Issued:
    """A certificate, its key, and the intermediates between it and its root (nearest first)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def fullchain(self) -> tuple[x509.Certificate, ...]:
        return (self.cert, *self.chain)

    @property
    def is_root(self) -> bool:
        return self.cert.issuer == self.cert.subject


def _sign(subject: x509.Name, key, issuer: Issued | None, days, not_before_days, extensions):
    now = dt.datetime.now(dt.UTC)
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=not_before_days))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical)
    chain = () if issuer is None or issuer.is_root else issuer.fullchain
    return Issued(builder.sign(signer, hashes.SHA256()), key, chain)


def _key_usage(*, signs_certs: bool, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signs_certs,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certs,
        crl_sign=signs_certs,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    cn: str,
    issuer: Issued | None = None,
    *,
    key_type: str = "ec",
    org: str | None = None,
    days: float = 365,
    not_before_days: float = -1,
) -> Issued:
    """A root CA, or an intermediate when `issuer` is given."""
    return _sign(
        name(cn, org),
        new_key(key_type),
        issuer,
        days,
        not_before_days,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (_key_usage(signs_certs=True), True),
        ],
    )


def make_leaf(
    cn: str,
    issuer: Issued | None,
    *,
    key_type: str = "ec",
    org: str | None = None,
    ips: Iterable[str] = (),
    dns: Iterable[str] = (),
    uris: Iterable[str] = (),
    eku: Iterable[str] = ("server", "client"),
    days: float = 90,
    not_before_days: float = -1,
) -> Issued:
    """An end-entity certificate; `issuer=None` makes it self-signed (an impostor no CA vouches
    for). `eku` names usages from EKUS; an empty one leaves the extension out."""
    key = new_key(key_type)
    unknown = sorted(set(eku) - set(EKUS))
    if unknown:
        raise ValueError(f"unknown extended key usage {unknown[0]!r} (expected server or client)")
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    sans += [x509.DNSName(d) for d in dns]
    sans += [x509.UniformResourceIdentifier(u) for u in uris]
    extensions = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(signs_certs=False, key_encipherment=isinstance(key, rsa.RSAPrivateKey)), True),
    ]
    if eku:
        extensions.append((x509.ExtendedKeyUsage([EKUS[e] for e in eku]), False))
    if sans:
        extensions.append((x509.SubjectAlternativeName(sans), False))
    return _sign(name(cn, org), key, issuer, days, not_before_days, extensions)


def make_crl(
    issuer: Issued,
    revoked: Iterable[x509.Certificate] = (),
    days: float = 7,
    last_update_days: float = -1,
) -> x509.CertificateRevocationList:
    """A CRL of `issuer` listing `revoked`, last updated `last_update_days` from now and due
    again `days` from now (negative: already expired)."""
    now = dt.datetime.now(dt.UTC)
    last_update_days = min(last_update_days, days - 1)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(now + dt.timedelta(days=last_update_days))
        .next_update(now + dt.timedelta(days=days))
    )
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now + dt.timedelta(days=last_update_days))
            .build()
        )
    return builder.sign(issuer.key, hashes.SHA256())


def pem(
    item: x509.Certificate | x509.CertificateRevocationList | PrivateKey,
    passphrase: bytes | None = None,
) -> bytes:
    """PEM of a certificate or a CRL, or of a key as PKCS#8 (encrypted with a passphrase)."""
    if isinstance(item, x509.Certificate | x509.CertificateRevocationList):
        return item.public_bytes(serialization.Encoding.PEM)
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return item.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def write_pem(
    path: Path,
    *items: x509.Certificate | x509.CertificateRevocationList | PrivateKey,
    passphrase: bytes | None = None,
) -> Path:
    """Write the items' PEM in order, readable by the owner only."""
    path.write_bytes(b"".join(pem(i, passphrase) for i in items))
    path.chmod(0o600)
    return path


def save(issued: Issued, directory: Path, stem: str) -> tuple[Path, Path]:
    """STEM.crt (the certificate, then its intermediates) and STEM.key in `directory`."""
    return (
        write_pem(directory / f"{stem}.crt", *issued.fullchain),
        write_pem(directory / f"{stem}.key", issued.key),
    )


class CA:
    """A CA whose files live in one directory: its certificate at `path` (None without
    `cert_file`), its key at `key_file` if given, and every leaf it issues via `save`."""

    def __init__(
        self,
        directory: Path,
        cn: str = "medtls test CA",
        *,
        issuer: CA | None = None,
        key_type: str = "ec",
        org: str | None = None,
        days: float = 365,
        not_before_days: float = -1,
        cert_file: str | None = "ca.pem",
        key_file: str | None = None,
    ):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key_type, self.org = key_type, org
        self.issuer = make_ca(
            cn,
            issuer.issuer if issuer else None,
            key_type=key_type,
            org=org,
            days=days,
            not_before_days=not_before_days,
        )
        self.path = write_pem(self.dir / cert_file, self.issuer.cert) if cert_file else None
        if key_file:
            write_pem(self.dir / key_file, self.issuer.key)
        self.leaves: dict[str, Issued] = {}

    def issue(self, stem: str, cn: str | None = None, **options) -> tuple[Path, Path]:
        """make_leaf(cn or stem, ...) with this CA's key type and organisation unless `options`
        override them; writes STEM.crt/STEM.key and keeps the result in `leaves[stem]`."""
        options = {"key_type": self.key_type, "org": self.org, **options}
        self.leaves[stem] = make_leaf(cn or stem, self.issuer, **options)
        return save(self.leaves[stem], self.dir, stem)
