"""medtls-firstboot with ACME enrollment settings on the FAT partition, run against a temporary
tree (MEDTLS_FIRSTBOOT_SRC, MEDTLS_CONFIG_DIR) with stand-ins for `medtls check` and `systemctl`
on PATH: the settings land in /etc/medtls with safe modes, the configuration gains an enrollment
section, the enrollment timer is enabled and started, and nothing of them stays on the card."""

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
IDENTITY = "identity:\n  certificate: /etc/medtls/device.crt\n  key: /etc/medtls/device.key\n"
ENABLE = "enable --now medtls-enroll.timer"


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
    checked, calls = tmp_path / "checked.yaml", tmp_path / "systemctl.log"
    (bin_ / "medtls").write_text(
        f'#!/bin/sh\ncp "$3" {checked}\nprintf %s "${{CHECK_OUT:-}}"\nexit "${{CHECK_RC:-0}}"\n'
    )
    (bin_ / "systemctl").write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n'
        'case "$*" in *is-enabled*) exit "${TIMER_ENABLED_RC:-1}" ;; esac\n'
        'echo "Failed to enable unit" >&2\nexit "${SYSTEMCTL_RC:-0}"\n'
    )
    for stub in bin_.iterdir():
        stub.chmod(0o755)
    (src / "medtls.yaml").write_text(CONFIG)

    def run(check_rc: int = 0, systemctl_rc: int = 0, timer_enabled: bool = False, **extra):
        # An existing user and group other than root: the EAB key must not go to them.
        env = {**os.environ, "MEDTLS_FIRSTBOOT_SRC": str(src), "MEDTLS_CONFIG_DIR": str(dst),
               "MEDTLS_GROUP": "nogroup", "MEDTLS_USER": "nobody",
               "PATH": f"{bin_}:{os.environ['PATH']}", "CHECK_RC": str(check_rc),
               "SYSTEMCTL_RC": str(systemctl_rc),
               "TIMER_ENABLED_RC": "0" if timer_enabled else "1", **extra}  # fmt: skip
        r = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, env=env,
                           timeout=60)  # fmt: skip
        r.systemctl = calls.read_text().splitlines() if calls.exists() else []
        return r

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
        "ACME_VALIDATION_SOURCES=198.18.0.40/32, 198.18.1.0/24\r\n"
    )
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert not src.exists()  # nothing stays on the card
    assert not (dst / "enrollment.conf").exists()
    key = dst / "acme-eab.key"
    assert key.read_text() == HMAC + "\n" and _mode(key) == 0o600
    if os.geteuid() == 0:  # root only: the enrollment unit (root, no DAC override) reads it
        assert (key.stat().st_uid, key.stat().st_gid) == (0, 0)
    assert (dst / "acme-ca.pem").read_text() == ca
    cfg = yaml.safe_load((dst / "medtls.yaml").read_text())
    assert cfg["enrollment"] == {"acme": {
        "directory": "https://198.18.0.40:14000/dir", "ca": f"{dst}/acme-ca.pem",
        "eab_key_id": "kid-1", "eab_hmac_key_file": f"{dst}/acme-eab.key"},
        "validation_sources": ["198.18.0.40/32", "198.18.1.0/24"]}  # fmt: skip
    assert cfg["device"] == {"ip": "198.18.0.10"}
    assert checked.read_text() == (dst / "medtls.yaml").read_text()  # checked as installed
    assert r.systemctl == [ENABLE]  # the box enrolls by itself
    assert "medtls-enroll.timer enabled and started" in r.stdout


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
        ("ACME_DIRECTORY=https://x/dir\nACME_VALIDATION_SOURCES=ca.x\n", "IPv4 addresses"),
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
    assert r.systemctl == []  # nothing enrolls with a configuration that is not installed
    assert (src / "enrollment.conf").exists()  # left for the technician to fix


def test_missing_validation_sources_name_the_setting_on_the_card(card):
    """In transparent mode `medtls check` requires enrollment.validation_sources; the technician
    writes enrollment.conf, so the error names its setting."""
    src, dst, _, run = card
    (src / "enrollment.conf").write_text("ACME_DIRECTORY=https://x/dir\n")
    r = run(check_rc=1, CHECK_OUT="enrollment.validation_sources: required in transparent mode")
    assert r.returncode == 1
    error = (src / "ERROR.txt").read_text()
    assert (
        "required in transparent mode (with enrollment.conf: set ACME_VALIDATION_SOURCES" in error
    )
    assert not (dst / "medtls.yaml").exists()


def test_a_state_directory_under_a_root_prefix_is_written(card, tmp_path):
    """MEDTLS_ENROLLMENT_STATE_DIR (set only when running under a root prefix, as the lab does)."""
    src, dst, _, run = card
    (src / "enrollment.conf").write_text("ACME_DIRECTORY=https://x/dir\n")
    r = run(MEDTLS_ENROLLMENT_STATE_DIR=str(tmp_path / "var/lib/medtls/enrollment"))
    assert r.returncode == 0, r.stdout + r.stderr
    enrollment = yaml.safe_load((dst / "medtls.yaml").read_text())["enrollment"]
    assert enrollment["state_dir"] == str(tmp_path / "var/lib/medtls/enrollment")


def test_identity_files_in_the_configuration_are_refused_with_enrollment(card):
    """With enrollment the box presents what it enrolls (<state_dir>/live/): a configuration that
    names hand-made identity files would never use it, so it is refused, saying what to remove."""
    src, dst, _, run = card
    (src / "medtls.yaml").write_text(CONFIG + IDENTITY)
    (src / "enrollment.conf").write_text("ACME_DIRECTORY=https://x/dir\n")
    r = run()
    assert r.returncode == 1
    error = (src / "ERROR.txt").read_text()
    assert "sets identity.certificate and identity.key" in error, error
    assert "remove identity.certificate and identity.key from medtls.yaml" in error
    assert not (dst / "medtls.yaml").exists() and r.systemctl == []


def test_identity_without_certificate_or_key_is_kept_with_enrollment(card):
    src, dst, _, run = card
    (src / "medtls.yaml").write_text(CONFIG + "identity:\n  ca: /etc/medtls/ca.pem\n")
    (src / "enrollment.conf").write_text("ACME_DIRECTORY=https://x/dir\n")
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert yaml.safe_load((dst / "medtls.yaml").read_text())["identity"] == {
        "ca": "/etc/medtls/ca.pem"
    }


def test_an_enrollment_section_of_its_own_also_enables_the_timer(card):
    src, _, _, run = card
    (src / "medtls.yaml").write_text(CONFIG + "enrollment:\n  acme:\n    directory: https://x/\n")
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.systemctl == [ENABLE]


def test_a_timer_that_cannot_start_keeps_the_card_for_the_next_boot(card):
    src, dst, _, run = card
    (src / "enrollment.conf").write_text("ACME_DIRECTORY=https://x/dir\n")
    r = run(systemctl_rc=1)
    assert r.returncode == 1
    error = (src / "ERROR.txt").read_text()
    assert "could not start enrollment (medtls-enroll.timer): Failed to enable unit" in error
    assert (src / "enrollment.conf").exists() and (dst / "medtls.yaml").exists()


@pytest.mark.parametrize("enabled", [True, False])
def test_without_enrollment_the_timer_is_disabled_if_it_was_on(card, enabled):
    """A box re-configured from enrollment to hand-issued certificates stops enrolling."""
    src, _, _, run = card
    (src / "medtls.yaml").write_text(CONFIG + IDENTITY)
    r = run(timer_enabled=enabled)
    assert r.returncode == 0, r.stdout + r.stderr
    disable = ["disable --now medtls-enroll.timer"] if enabled else []
    assert r.systemctl == ["-q is-enabled medtls-enroll.timer", *disable]
