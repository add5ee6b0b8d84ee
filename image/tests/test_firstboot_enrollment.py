"""medtls-firstboot with ACME enrollment settings on the FAT partition, run against a temporary
tree (MEDTLS_FIRSTBOOT_SRC, MEDTLS_CONFIG_DIR) with a stand-in `medtls check` on PATH: the
settings land in /etc/medtls with safe modes, the configuration gains an enrollment section, and
nothing of them stays on the card."""

from __future__ import annotations

import hashlib
import os
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "files" / "medtls-firstboot"
HMAC = "c2VjcmV0LWhtYWMta2V5LWZvci10ZXN0cw"
CONFIG = "device:\n  ip: 198.18.0.10\ntrust:\n  ca: /etc/medtls/ca.pem\n"


def _cert(cn: str) -> str:
    """A self-signed certificate PEM (openssl CLI, as on the build machine)."""
    out = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "/dev/null", "-subj", f"/CN={cn}", "-days", "2"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout


def _sha256(pem: str) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


@pytest.fixture
def card(tmp_path):
    src, dst, bin_ = tmp_path / "boot/medtls", tmp_path / "etc/medtls", tmp_path / "bin"
    src.mkdir(parents=True)
    bin_.mkdir()
    checked = tmp_path / "checked.yaml"
    (bin_ / "medtls").write_text(f'#!/bin/sh\ncp "$3" {checked}\nexit "${{CHECK_RC:-0}}"\n')
    (bin_ / "medtls").chmod(0o755)
    (src / "medtls.yaml").write_text(CONFIG)

    def run(check_rc: int = 0):
        env = {**os.environ, "MEDTLS_FIRSTBOOT_SRC": str(src), "MEDTLS_CONFIG_DIR": str(dst),
               "MEDTLS_GROUP": "nonexistent-medtls-group", "MEDTLS_USER": "nonexistent-medtls",
               "PATH": f"{bin_}:{os.environ['PATH']}", "CHECK_RC": str(check_rc)}  # fmt: skip
        return subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, env=env,
                              timeout=60)  # fmt: skip

    return src, dst, checked, run


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_settings_with_ca_pem_installed_and_removed_from_the_card(card):
    src, dst, checked, run = card
    ca = _cert("ACME CA")
    (src / "acme-ca.pem").write_text(ca)
    (src / "enrollment.conf").write_text(
        "# from the hospital PKI team\r\nACME_DIRECTORY=https://198.18.0.40:14000/dir\r\n"
        f"EAB_KEY_ID=kid-1\r\nEAB_HMAC_KEY={HMAC}\r\n"
    )
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert not src.exists()  # nothing stays on the card
    assert not (dst / "enrollment.conf").exists()
    key = dst / "acme-eab.key"
    assert key.read_text() == HMAC + "\n" and _mode(key) == 0o600
    assert (dst / "acme-ca.pem").read_text() == ca
    cfg = yaml.safe_load((dst / "medtls.yaml").read_text())
    assert cfg["enrollment"] == {"acme": {
        "directory": "https://198.18.0.40:14000/dir", "ca": f"{dst}/acme-ca.pem",
        "eab_key_id": "kid-1", "eab_hmac_key_file": f"{dst}/acme-eab.key"}}  # fmt: skip
    assert cfg["device"] == {"ip": "198.18.0.10"}
    assert checked.read_text() == (dst / "medtls.yaml").read_text()  # checked as installed


def test_fingerprint_pins_the_ca_from_the_pem_files_on_the_card(card):
    src, dst, _, run = card
    hospital, acme = _cert("Hospital CA"), _cert("ACME CA")
    (src / "ca.pem").write_text(hospital + acme)
    (src / "enrollment.conf").write_text(
        f"ACME_DIRECTORY=https://acme.example/dir\nACME_CA_SHA256={_sha256(acme).upper()}\n"
    )
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert (dst / "acme-ca.pem").read_text().strip() == acme.strip()  # only the pinned CA
    acme_cfg = yaml.safe_load((dst / "medtls.yaml").read_text())["enrollment"]["acme"]
    assert acme_cfg == {"directory": "https://acme.example/dir", "ca": f"{dst}/acme-ca.pem"}
    assert not (dst / "acme-eab.key").exists()


@pytest.mark.parametrize(
    ("conf", "why"),
    [
        ("ACME_DIRECTORY=http://198.18.0.40/dir\n", "must be an https:// URL"),
        ("ACME_DIRECTORY=https://x/dir\nEAB_KEY_ID=kid\n", "go together"),
        ("ACME_DIRECTORY=https://x/dir\nEAB_HMAC_KEY=a b\n", "base64url"),
        ('ACME_DIRECTORY=https://x/dir"\n', "characters a URL does not"),
        ('ACME_DIRECTORY=https://x/dir\nEAB_KEY_ID=k"\nEAB_HMAC_KEY=abc\n', "EAB_KEY_ID"),
        ("ACME_DIRECTORY=https://x/dir\nSOMETHING=1\n", "unknown line 'SOMETHING=1'"),
        ("ACME_DIRECTORY=https://x/dir\nACME_CA_SHA256=" + "ab" * 32 + "\n", "no certificate"),
    ],
)
def test_bad_settings_install_nothing_and_say_why(card, conf, why):
    src, dst, _, run = card
    (src / "ca.pem").write_text(_cert("Hospital CA"))
    (src / "enrollment.conf").write_text(conf)
    r = run()
    assert r.returncode == 1
    assert why in (src / "ERROR.txt").read_text(), r.stdout
    assert not (dst / "medtls.yaml").exists() and not (dst / "acme-eab.key").exists()


def test_a_configuration_with_its_own_enrollment_section_is_refused(card):
    src, _, _, run = card
    (src / "medtls.yaml").write_text(CONFIG + "enrollment:\n  acme:\n    directory: https://x/\n")
    (src / "enrollment.conf").write_text("ACME_DIRECTORY=https://x/dir\n")
    r = run()
    assert r.returncode == 1 and "use one" in (src / "ERROR.txt").read_text()


def test_a_failed_check_installs_nothing(card):
    src, dst, _, run = card
    (src / "enrollment.conf").write_text(
        f"ACME_DIRECTORY=https://x/dir\nEAB_KEY_ID=k\nEAB_HMAC_KEY={HMAC}\n"
    )
    r = run(check_rc=1)
    assert r.returncode == 1
    assert not (dst / "medtls.yaml").exists() and not (dst / "acme-eab.key").exists()
    assert (src / "enrollment.conf").exists()  # left for the technician to fix
