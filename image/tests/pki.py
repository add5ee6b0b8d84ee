"""A throwaway RSA CA with the boot test's certificates."""

from __future__ import annotations

from pathlib import Path

from medtls_testpki import CA


def make_pki(d: Path, device_ip: str, pacs_ip: str) -> Path:
    """ca.pem/ca.key, device.crt/key (the box speaks for the modality), pacs.crt/key (LAN peer)."""
    ca = CA(d, "medtls boot test CA", key_type="rsa", days=30, key_file="ca.key")
    ca.issue("device", "ct-modality", ips=(device_ip,), days=30)
    ca.issue("pacs", "pacs", ips=(pacs_ip,), dns=("pacs.hospital.example",), days=30)
    return d
