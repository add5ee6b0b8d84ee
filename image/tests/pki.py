"""A throwaway CA with the boot test's certificates, made with the openssl CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _leaf(d: Path, name: str, cn: str, san: str) -> None:
    key, csr, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
    _openssl("genrsa", "-out", str(key), "2048")
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={cn}", "-out", str(csr))
    ext.write_text(
        f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
        "-CAcreateserial", "-days", "30", "-sha256", "-extfile", str(ext),
        "-out", str(d / f"{name}.crt"),
    )  # fmt: skip


def make_pki(d: Path, device_ip: str, pacs_ip: str) -> Path:
    """ca.pem/ca.key, device.crt/key (the box speaks for the modality), pacs.crt/key (LAN peer)."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"),
        "-subj", "/CN=medtls boot test CA", "-days", "30", "-sha256", "-out", str(d / "ca.pem"),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _leaf(d, "device", "ct-modality", f"IP:{device_ip}")
    _leaf(d, "pacs", "pacs", f"IP:{pacs_ip},DNS:pacs.hospital.example")
    return d
