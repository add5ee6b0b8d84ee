"""Throw-away PKI for the benchmark: one CA, a server and a client leaf, ECDSA P-256 or RSA 2048."""

from dataclasses import dataclass
from pathlib import Path

from medtls_testpki import CA, HOUR, write_pem

SERVER_NAME = "server.bench.test"
CLIENT_NAME = "client.bench.test"
MONTH = {"days": 30, "not_before_days": -HOUR}
SERVER = {"ips": ("127.0.0.1",), "dns": (SERVER_NAME,), "eku": ("server",), **MONTH}


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


def make_pki(directory: Path, kind: str) -> Pki:
    """Create (or reuse) the PKI of one key kind ("ecdsa" or "rsa") under directory/kind."""
    d = directory / kind
    if (d / "complete").exists():
        return _paths(d)
    ca = CA(d, "medtls bench CA", key_type=kind, **MONTH)
    ca.issue("server", SERVER_NAME, **SERVER)
    ca.issue("client", "client", dns=(CLIENT_NAME,), eku=("client",), **MONTH)
    rogue = CA(d, "rogue CA", key_type=kind, cert_file=None, **MONTH)
    rogue.issue("rogue", SERVER_NAME, **SERVER)
    for stem, leaf in {**ca.leaves, **rogue.leaves}.items():
        write_pem(d / f"{stem}.pem", leaf.cert, leaf.key)
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
