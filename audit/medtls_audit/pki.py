"""A throwaway PKI for scanning a loopback listener: one EC root, one RSA and one EC leaf."""

from __future__ import annotations

from pathlib import Path

from medtls_testpki import CA, HOUR

KINDS = ("rsa", "ec")


def make_pki(d: Path) -> dict[str, Path]:
    """Write ca.pem and <kind>.crt/<kind>.key for every kind in KINDS; return their paths."""
    window = {"days": 90, "not_before_days": -HOUR}
    ca = CA(d, "medtls audit CA", **window)
    paths = {"ca": ca.path}
    for kind in KINDS:
        crt, key = ca.issue(kind, f"audit-{kind}", key_type=kind, ips=("127.0.0.1",), **window)
        paths[f"{kind}.crt"], paths[f"{kind}.key"] = crt, key
    return paths
