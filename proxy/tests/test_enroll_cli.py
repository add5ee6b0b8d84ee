"""`medtls enroll` end to end, as the box runs it (`/usr/bin/python3 -m medtls enroll`), against
Debian's pebble with EAB required and real validation. Both run in a network namespace of the
test alone, so the responder can listen on 127.0.0.1:443/80 (explicit mode) and pebble's
validator dials those ports as it would for a device address."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pebble_util import EAB_HMAC, EAB_KID, PEBBLE, running_pebble

PROXY = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.access(PEBBLE, os.X_OK),
    reason="needs root (network namespace) and Debian's pebble",
)


@pytest.fixture(scope="module")
def netns():
    name = f"e2acme{os.getpid() % 10000}{random.randint(100, 999)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=20)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                       check=True, capture_output=True, timeout=20)  # fmt: skip
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def pebble(netns, tmp_path_factory):
    with running_pebble(tmp_path_factory.mktemp("pebble"), netns=netns) as peb:
        yield peb


def write_config(tmp_path: Path, peb, *, challenges=("tls-alpn-01",), hmac=EAB_HMAC,
                 kid=EAB_KID, directory=None) -> Path:  # fmt: skip
    root = tmp_path / "pebble-root.pem"
    if not root.exists():
        root.write_bytes(peb.root_pem())
    hmac_file = tmp_path / "eab.key"
    hmac_file.write_text(hmac + "\n")
    hmac_file.chmod(0o600)
    cfg = {
        "device": {"ip": "127.0.0.1"},
        "mode": "explicit",
        "trust": {"ca": str(root)},
        "clock": {"require_sync": False},
        "metrics": {"enabled": False},
        "audit": {"transport": "none"},
        "control": {"socket": str(tmp_path / "control.sock")},
        "enrollment": {
            "acme": {
                "directory": directory or peb.directory,
                "ca": str(peb.ca_file),
                "eab_key_id": kid,
                "eab_hmac_key_file": str(hmac_file),
            },
            "identifiers": {"ip": ["device"]},
            "challenges": list(challenges),
            "state_dir": str(tmp_path / "state"),
        },
    }
    path = tmp_path / "medtls.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def enroll(netns: str, config: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(
        ["ip", "netns", "exec", netns, SYSTEM_PYTHON, "-m", "medtls", "enroll",
         "--config", str(config), *args],
        capture_output=True, text=True, timeout=180,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(PROXY)},
    )  # fmt: skip
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    return r


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "state" / "state.json").read_text())


def live_leaf(tmp_path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(
        (tmp_path / "state" / "live" / "fullchain.pem").read_bytes()
    )[0]


@pytest.mark.parametrize("challenge", ["tls-alpn-01", "http-01"])
def test_enroll_issues_installs_and_then_waits(netns, pebble, tmp_path, challenge):
    config = write_config(tmp_path, pebble, challenges=[challenge])
    r = enroll(netns, config)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "issued serial" in r.stdout
    leaf = live_leaf(tmp_path)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ekus = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= ekus
    s = state(tmp_path)
    assert s["phase"] == "valid" and s["serial"] == format(leaf.serial_number, "x")
    assert s["last_error"] is None
    lifetime = s["not_after"] - s["not_before"]
    assert s["not_before"] + 0.6 * lifetime <= s["next_renewal"] <= s["not_after"]
    key_mode = (tmp_path / "state" / "live" / "key.pem").stat().st_mode & 0o777
    assert key_mode & 0o027 == 0  # no other access, the group (medtls) reads at most

    # Not due: nothing is ordered, the certificate stays.
    r = enroll(netns, config, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["serial"] == s["serial"]
    assert live_leaf(tmp_path).serial_number == leaf.serial_number

    # --force renews with a fresh key.
    r = enroll(netns, config, "--force")
    assert r.returncode == 0, r.stderr
    renewed = live_leaf(tmp_path)
    assert renewed.serial_number != leaf.serial_number
    assert renewed.public_key() != leaf.public_key()


def test_ca_down_keeps_the_certificate_and_the_state_says_why(netns, pebble, tmp_path):
    config = write_config(tmp_path, pebble)
    assert enroll(netns, config).returncode == 0
    live = (tmp_path / "state" / "live" / "fullchain.pem").read_bytes()
    before = state(tmp_path)
    down = write_config(tmp_path, pebble, directory="https://127.0.0.1:14999/dir")
    t0 = time.time()
    r = enroll(netns, down, "--force")
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("medtls enroll: failed: acme directory: cannot reach the CA")
    s = state(tmp_path)
    assert s["last_error"].startswith("acme directory: cannot reach the CA")
    assert s["attempts"] == 1 and s["serial"] == before["serial"]
    assert s["phase"] == "failed"
    assert t0 + 25 <= s["next_renewal"] <= t0 + 3600  # backed off, not hammering the CA
    assert (tmp_path / "state" / "live" / "fullchain.pem").read_bytes() == live
    # The back-off holds: the next timer run does not try again yet.
    r = enroll(netns, down)
    assert r.returncode == 0 and state(tmp_path)["attempts"] == 1


def test_first_enrollment_with_the_ca_down_leaves_no_certificate(netns, pebble, tmp_path):
    config = write_config(tmp_path, pebble, directory="https://127.0.0.1:14999/dir")
    r = enroll(netns, config, "--json")
    assert r.returncode == 1
    s = json.loads(r.stdout)
    assert s["phase"] == "enrolling" and "cannot reach the CA" in s["last_error"]
    assert not (tmp_path / "state" / "live").exists()


def test_wrong_eab_key_gets_no_certificate(netns, pebble, tmp_path):
    config = write_config(tmp_path, pebble, hmac="d3JvbmcgaG1hYyBrZXkgb2YgMzIgYnl0ZXMgISEhISE")
    r = enroll(netns, config)
    assert r.returncode == 1
    assert "medtls enroll: failed: acme account: the CA refused: " in r.stderr
    assert not (tmp_path / "state" / "live").exists()


def test_configuration_errors_exit_2(netns, pebble, tmp_path):
    config = write_config(tmp_path, pebble)
    (tmp_path / "eab.key").chmod(0o644)
    r = enroll(netns, config)
    assert r.returncode == 2
    assert "eab_hmac_key_file" in r.stderr and "chmod 600" in r.stderr
    plain = tmp_path / "plain.yaml"
    raw = yaml.safe_load(config.read_text())
    del raw["enrollment"]
    raw["identity"] = {"certificate": "/nonexistent.crt", "key": "/nonexistent.key"}
    plain.write_text(yaml.safe_dump(raw))
    r = enroll(netns, plain)
    assert r.returncode == 2 and "no enrollment section" in r.stderr
