"""Throw-away PKI for the benchmark: one CA, a server and a client leaf, ECDSA P-256 or RSA 2048."""

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAME = "server.bench.test"
CLIENT_NAME = "client.bench.test"
KEY_KINDS = ("ecdsa", "rsa")


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_crt: Path
    server_key: Path
    server_pem: Path  # certificate followed by key, the form haproxy wants
    client_crt: Path
    client_key: Path
    client_pem: Path
    rogue_pem: Path  # server cert+key from an untrusted CA, for the verification check
    rogue_crt: Path
    rogue_key: Path


def _key(kind: str):
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key kind {kind!r} (expected one of {', '.join(KEY_KINDS)})")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer, issuer_key, *, ca=False, san=None, eku=None):
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, *items) -> Path:
    chunks = []
    for item in items:
        if isinstance(item, x509.Certificate):
            chunks.append(item.public_bytes(serialization.Encoding.PEM))
        else:
            chunks.append(
                item.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
    path.write_bytes(b"".join(chunks))
    path.chmod(0o600)
    return path


def make_pki(directory: Path, kind: str) -> Pki:
    """Create (or reuse) the PKI of one key kind under directory/kind."""
    d = directory / kind
    d.mkdir(parents=True, exist_ok=True)
    if (d / "complete").exists():
        return _paths(d)
    ca_key = _key(kind)
    ca = _cert("medtls bench CA", ca_key, "medtls bench CA", ca_key, ca=True)
    srv_key = _key(kind)
    srv = _cert(
        SERVER_NAME,
        srv_key,
        "medtls bench CA",
        ca_key,
        san=[x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    cli_key = _key(kind)
    cli = _cert(
        "client",
        cli_key,
        "medtls bench CA",
        ca_key,
        san=[x509.DNSName(CLIENT_NAME)],
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    rogue_ca_key = _key(kind)
    rogue_key = _key(kind)
    rogue = _cert(
        SERVER_NAME,
        rogue_key,
        "rogue CA",
        rogue_ca_key,
        san=[x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        eku=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    _write(d / "ca.pem", ca)
    _write(d / "server.crt", srv)
    _write(d / "server.key", srv_key)
    _write(d / "server.pem", srv, srv_key)
    _write(d / "client.crt", cli)
    _write(d / "client.key", cli_key)
    _write(d / "client.pem", cli, cli_key)
    _write(d / "rogue.pem", rogue, rogue_key)
    _write(d / "rogue.crt", rogue)
    _write(d / "rogue.key", rogue_key)
    (d / "complete").write_text("")
    return _paths(d)


def _paths(d: Path) -> Pki:
    return Pki(
        ca=d / "ca.pem",
        server_crt=d / "server.crt",
        server_key=d / "server.key",
        server_pem=d / "server.pem",
        client_crt=d / "client.crt",
        client_key=d / "client.key",
        client_pem=d / "client.pem",
        rogue_pem=d / "rogue.pem",
        rogue_crt=d / "rogue.crt",
        rogue_key=d / "rogue.key",
    )
