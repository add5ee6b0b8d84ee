"""ACME enrollment end to end in the lab: Debian's pebble in the LAN (namespace PREFIXca,
198.18.0.40, EAB required, real validation through the box to the device's address), the box
configured from nothing but what a technician puts on the card: a `medtls/` folder (FAT partition
stand-in) with `enrollment.conf` and a medtls.yaml without identity, imported by the image's real
`medtls-firstboot` into a temporary root (its `medtls check` is this checkout's, systemctl a
recording stand-in); the box then runs with the installed /etc/medtls/medtls.yaml, `medtls enroll`
as on the box (`/usr/bin/python3 -m medtls enroll`, its own process).

The tests run in order on one module-wide setup: enroll, serve, Mallory, renew under load,
CA unreachable, expired. Captures on the device's cable and the LAN leg decide what crossed.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from medlab import pebble as pb
from medlab import services as sv
from medlab.dicomfile import make_dicom, stored_objects
from medlab.net import LAB_DIR, LabError, tshark
from medlab.pki import issue

FIRSTBOOT = sv.REPO / "image" / "files" / "medtls-firstboot"

LIFETIME = 25  # seconds of the hand-made certificate that expires during the last test
ENROLL_TIMEOUT = 150  # the client's own order timeout is 120 s
DEBIAN_PYTHON = "/usr/bin/python3"


def write_card(env, peb: pb.Pebble, card: Path, etc: Path, run: Path) -> Path:
    """The `medtls/` folder a technician puts on the FAT partition (docs/flashing.md): the lab's
    medtls.yaml without identity.certificate/key (paths naming the files' final place under the
    temporary root), the PEM files it names, the ACME server's CA and enrollment.conf."""
    card.mkdir(parents=True)
    lab_ca = (env.pki / "ca.crt").read_text()
    cfg = yaml.safe_load(env.config.read_text())
    cfg["identity"] = {"ca": str(etc / "pebble-roots.pem")}  # the enrolled chain's CA
    cfg["trust"] = {"ca": str(etc / "ca.pem")}
    cfg["control"] = {"socket": str(run / "control.sock")}
    (card / "medtls.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (card / "ca.pem").write_text(lab_ca)
    (card / "pebble-roots.pem").write_text(peb.roots.read_text())
    (card / "acme-ca.pem").write_text(lab_ca)  # pebble's HTTPS certificate is the lab CA's
    pin = hashlib.sha256(ssl.PEM_cert_to_DER_cert(lab_ca)).hexdigest()
    (card / "enrollment.conf").write_text(
        "# from the hospital PKI team\r\n"
        f"ACME_DIRECTORY={peb.directory}\r\nEAB_KEY_ID={pb.EAB_KID}\r\n"
        f"EAB_HMAC_KEY={peb.eab_hmac}\r\nACME_CA_SHA256={pin}\r\n"
        f"ACME_VALIDATION_SOURCES={pb.CA_IP}/32\r\n"
    )
    return card


def first_boot(root: Path, card: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The image's medtls-firstboot against the temporary root: `medtls check` of this checkout,
    systemctl a stand-in recording what it was asked."""
    bin_, calls = root / "stand-ins", root / "systemctl.calls"
    bin_.mkdir()
    (bin_ / "medtls").write_text(
        f'#!/bin/sh\nexec env PYTHONPATH={sv.REPO / "proxy"} {sys.executable} -m medtls "$@"\n'
    )
    (bin_ / "systemctl").write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\ncase "$*" in *is-enabled*) exit 1 ;; esac\n'
    )
    for stub in bin_.iterdir():
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}",
           "MEDTLS_FIRSTBOOT_SRC": str(card), "MEDTLS_CONFIG_DIR": str(root / "etc/medtls"),
           "MEDTLS_ENROLLMENT_STATE_DIR": str(root / "var/lib/medtls/enrollment"),
           "MEDTLS_GROUP": "root"}  # fmt: skip
    r = subprocess.run(["sh", str(FIRSTBOOT)], capture_output=True, text=True, env=env,
                       timeout=60, check=False)  # fmt: skip
    return r, calls.read_text().splitlines() if calls.exists() else []


class Box:
    """The lab box configured by first boot from the card, and the commands run against it."""

    def __init__(self, env, peb: pb.Pebble, workdir: Path):
        self.env, self.lab, self.peb, self.workdir = env, env.lab, peb, workdir
        root = workdir / "root"
        self.etc, self.state_dir = root / "etc/medtls", root / "var/lib/medtls/enrollment"
        (root / "run").mkdir(parents=True)
        self.card = write_card(env, peb, workdir / "boot/medtls", self.etc, root / "run")
        self.firstboot, self.systemctl = first_boot(root, self.card)
        self.config = self.etc / "medtls.yaml"

    @property
    def identity_ca(self) -> Path:
        return self.etc / "pebble-roots.pem"

    @property
    def fullchain(self) -> Path:
        return self.state_dir / "live" / "fullchain.pem"

    def medtls(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.lab.run("box", [*sv.medtls_argv(*args), "--config", str(self.config)],
                            timeout=timeout, check=False)  # fmt: skip

    def enroll(self, *args: str) -> subprocess.CompletedProcess:
        """`medtls enroll` as the box's medtls-enroll.service runs it (Debian's python)."""
        argv = ["env", f"PYTHONPATH={os.environ['PYTHONPATH']}", DEBIAN_PYTHON, "-m", "medtls",
                "enroll", "--config", str(self.config), *args]  # fmt: skip
        return self.lab.run("box", argv, timeout=ENROLL_TIMEOUT, check=False)

    def status(self) -> str:
        r = self.medtls("status")
        return r.stdout + r.stderr

    def state(self) -> dict:
        return json.loads((self.state_dir / "state.json").read_text())

    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.fullchain.read_bytes())

    def served_serial(self, port: int = 2762) -> int:
        """Serial of the certificate medtls presents on the device's address to a LAN peer."""
        cert, key, _ = self.env.tls("pacs")
        r = self.lab.run("pacs", ["openssl", "s_client", "-connect", f"{sv.DEVICE_IP}:{port}",
                                  "-cert", cert, "-key", key, "-CAfile", str(self.identity_ca),
                                  "-verify_ip", sv.DEVICE_IP, "-verify_return_error"],
                         input="", timeout=20, check=False)  # fmt: skip
        pem = r.stdout[r.stdout.find("-----BEGIN CERTIFICATE") :]
        if "Verify return code: 0 (ok)" not in r.stdout or not pem.startswith("-----BEGIN"):
            raise LabError(f"no verified certificate on {port}:\n{r.stdout[-1500:]}{r.stderr}")
        return x509.load_pem_x509_certificate(pem.encode()).serial_number

    def pacs_tls(self) -> tuple[str, str, str]:
        """The PACS as an inbound TLS client trusting the box's (pebble-issued) certificate."""
        cert, key, _ = self.env.tls("pacs")
        return cert, key, str(self.identity_ca)


@pytest.fixture(scope="module")
def box(env, tmp_path_factory):
    lab = env.lab
    workdir = tmp_path_factory.mktemp("enroll")
    original = env.config
    peb = None
    try:
        peb = pb.setup(lab, env.pki, workdir / "pebble")
        b = Box(env, peb, workdir)
        assert b.firstboot.returncode == 0, b.firstboot.stdout + b.firstboot.stderr
        env.stop_medtls()
        sv.apply_rules(lab, b.config)
        env.config = b.config
        yield b
    finally:
        if peb is not None:
            peb.stop()
        pb.remove_namespace(lab)
        env.stop_medtls()
        env.config = original
        sv.apply_rules(lab, original)


@pytest.fixture(autouse=True)
def _medtls_running(box):
    """Overrides the lab's: medtls is started by the tests here, once a certificate exists."""
    yield


def _start_medtls(env) -> None:
    if env.medtls is None or env.medtls.poll() is not None:
        env.start_medtls()


def _ekus(cert: x509.Certificate) -> set:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_first_boot_installs_the_cards_enrollment_settings(box):
    assert "medtls-enroll.timer enabled and started" in box.firstboot.stdout
    assert box.systemctl == ["enable --now medtls-enroll.timer"]
    assert not box.card.exists(), "the EAB key stayed on the FAT partition"
    key = box.etc / "acme-eab.key"
    assert key.read_text() == box.peb.eab_hmac + "\n"
    st = key.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)
    cfg = yaml.safe_load(box.config.read_text())
    assert "certificate" not in cfg["identity"] and "key" not in cfg["identity"]
    assert cfg["enrollment"] == {
        "acme": {"directory": box.peb.directory, "ca": str(box.etc / "acme-ca.pem"),
                 "eab_key_id": pb.EAB_KID, "eab_hmac_key_file": str(key)},
        "validation_sources": [f"{pb.CA_IP}/32"], "state_dir": str(box.state_dir),
    }  # fmt: skip


def test_box_without_certificate_enrolls_for_the_device_address(env, box):
    lab = env.lab
    assert not box.fullchain.exists()
    # Before its first certificate the box runs fail closed and says it is enrolling.
    env.restarts += 1
    env.medtls = lab.spawn("box", sv.medtls_argv("run", "--config", str(box.config)),
                           f"medtls-{env.restarts}.log")  # fmt: skip
    sv.wait_for(lambda: "enrolling" in box.status(), 20, "medtls status: enrolling")
    assert "CRITICAL" in box.status()
    refused = sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, check=False)
    assert refused.returncode != 0, "the device reached the PACS without a certificate"
    with (
        lab.capture("modality", "eth0", "enroll-device.pcap") as device,
        lab.capture("mallory", "box", "enroll-lan.pcap") as lan,
    ):
        r = box.enroll()
    assert r.returncode == 0, f"medtls enroll failed:\n{r.stdout}{r.stderr}\n{box.peb.log[-3000:]}"
    # The reload `medtls enroll` asked for brings the running daemon into service.
    lab.wait_listen("box", 15002, timeout=20, proc=env.medtls, log=f"medtls-{env.restarts}.log")
    leaf = box.leaf()
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == [sv.DEVICE_IP]
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= _ekus(leaf)
    state = box.state()
    assert state["phase"] == "valid" and state["serial"] == format(leaf.serial_number, "x")
    # The CA validated the device's address through the box (control) ...
    validation = f"ip.src == {pb.CA_IP} and ip.dst == {sv.DEVICE_IP} and tcp.flags.syn == 1"
    assert tshark(lan, validation), "control: no validation connection on the LAN leg"
    # ... and the ACME requests left as the device.
    assert tshark(lan, f"ip.src == {sv.DEVICE_IP} and tcp.dstport == {pb.ACME_PORT}")
    # The modality's cable saw none of it.
    seen = tshark(device, f"ip.addr == {pb.CA_IP} or tcp.port == 443 or tcp.port == 80")
    assert seen == [], f"validation or ACME traffic on the device's cable: {seen[:3]}"


def test_enrolled_certificate_is_served_to_a_lan_peer(env, box, dicom):
    lab = env.lab
    path, pixels = dicom
    assert env.medtls is not None and env.medtls.poll() is None, "the enrolling daemon exited"
    assert box.served_serial() == box.leaf().serial_number
    before = len(stored_objects(env.modality_store))
    sv.store(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, path, tls=box.pacs_tls())
    stored = stored_objects(env.modality_store)
    assert len(stored) == before + 1 and any(p == pixels for *_, p in stored)


def test_mallory_without_the_eab_key_gets_no_account(env, box):
    argv = ["env", f"PYTHONPATH={LAB_DIR}", DEBIAN_PYTHON, "-m", "medlab.acmemallory",
            box.peb.directory, str(env.pki / "ca.crt"), pb.EAB_KID, box.peb.eab_hmac]  # fmt: skip
    out = env.lab.run("mallory", argv, timeout=60).stdout
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["no-eab"].startswith("refused urn:ietf:params:acme:error:externalAccountRequired")
    assert lines["wrong-hmac"].startswith("refused "), lines
    assert lines["right-eab"] == "ok", f"control: the right EAB key was refused too: {lines}"


def _serials(log: str) -> list[int]:
    return [int(x.split("=")[1], 16) for x in log.split() if x.startswith("serial=")]


def test_renewal_under_load_drops_nothing(env, box, tmp_path):
    lab = env.lab
    _start_medtls(env)
    old_serial = box.served_serial()
    cert, key, roots = box.pacs_tls()
    long_path = tmp_path / "long.dcm"
    make_dicom(long_path, seed=1807, size=256)
    # One long association (hundreds of C-STOREs) and a stream of new connections.
    long_argv = [sv.dcmtk("storescu"), "-to", "30", "-ta", "30", "-td", "60", "-aet", "LABSCU",
                 "-aec", sv.DEVICE_AET, "--repeat", "300", "+tls", key, cert, "+cf", roots,
                 sv.DEVICE_IP, "2762", str(long_path)]  # fmt: skip
    # New connections: verified handshakes (the device IP in the SAN, pebble's chain), each
    # printing the serial it was served.
    handshakes = (
        f"ok=0; fail=0; while [ ! -e {tmp_path}/stop ] && [ $((ok+fail)) -lt 600 ]; do "
        f"out=$(timeout 10 openssl s_client -connect {sv.DEVICE_IP}:2762 -cert {cert} "
        f"-key {key} -CAfile {roots} -verify_ip {sv.DEVICE_IP} -verify_return_error "
        f"</dev/null 2>&1); "
        'if echo "$out" | grep -q "Verify return code: 0 (ok)"; then ok=$((ok+1)); '
        'echo "$out" | openssl x509 -noout -serial; else fail=$((fail+1)); '
        'echo "$out" | tail -3; fi; sleep 0.05; done; echo ok=$ok fail=$fail'
    )
    transfer = lab.spawn("pacs", long_argv, "renewal-long.log")
    echoes = lab.spawn("pacs", ["bash", "-c", handshakes], "renewal-handshakes.log")
    try:
        time.sleep(1.0)
        assert transfer.poll() is None, f"load ended early: {lab.log('renewal-long.log')[-800:]}"
        r = box.enroll("--force")
        renewed_while_loaded = transfer.poll() is None
        # The reload is asynchronous: keep dialling until the new certificate is served.
        if r.returncode == 0:
            new = box.leaf().serial_number
            sv.wait_for(lambda: new in _serials(lab.log("renewal-handshakes.log")), 20,
                        "the renewed certificate on new connections")  # fmt: skip
        (tmp_path / "stop").touch()
        transfer.wait(120)
        echoes.wait(60)
    finally:
        lab.stop(transfer)
        lab.stop(echoes)
    assert r.returncode == 0, f"renewal failed:\n{r.stdout}{r.stderr}"
    assert renewed_while_loaded, "the long association ended before the renewal did"
    assert transfer.returncode == 0, lab.log("renewal-long.log")[-2000:]
    log = lab.log("renewal-handshakes.log")
    counts = log.split()[-2:]
    assert counts[1] == "fail=0" and counts[0] != "ok=0", log[-2000:]
    new_serial = box.served_serial()
    assert new_serial != old_serial and new_serial == box.leaf().serial_number
    served = _serials(log)
    assert served[0] == old_serial and served[-1] == new_serial, "no switch seen mid-load"


def test_ca_unreachable_keeps_the_current_certificate_and_says_why(env, box, dicom):
    lab = env.lab
    _start_medtls(env)
    serial = box.leaf().serial_number
    box.peb.stop()
    r = box.enroll("--force")
    assert r.returncode == 1, f"enroll with the CA down: {r.returncode}\n{r.stdout}{r.stderr}"
    state = box.state()
    assert state["last_error"] and state["attempts"] >= 1, state
    assert state["next_renewal"] > time.time(), "no retry scheduled"
    assert box.leaf().serial_number == serial == box.served_serial()
    path, _ = dicom
    sv.store(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, path, tls=box.pacs_tls())
    status = box.medtls("status")
    text = status.stdout + status.stderr
    assert "enroll" in text.lower() and state["last_error"][:40] in text, text
    assert "WARNING: enrollment: renewal failing" in text, text


def test_expired_and_not_renewed_fails_closed_and_says_why(env, box, dicom):
    """A hand-made certificate (lab CA) that expires in seconds, installed as the live
    generation; the CA stays down, so nothing renews it."""
    lab = env.lab
    _start_medtls(env)
    path, _ = dicom
    gen = box.state_dir / "hand-made-short"
    gen.mkdir(exist_ok=True)
    cert, key = issue(env.pki, "short", "ct-modality", ips=(sv.DEVICE_IP,), out=gen,
                      days=LIFETIME / 86400, not_before_days=-1 / 24)  # fmt: skip
    cert.rename(gen / "fullchain.pem")
    key.rename(gen / "key.pem")
    expires = x509.load_pem_x509_certificate((gen / "fullchain.pem").read_bytes())
    live = box.state_dir / "live"
    tmp = box.state_dir / "live.hand-made"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(gen.name)
    tmp.replace(live)
    # identity.ca (pebble's chain) gains the lab CA, which issued the hand-made certificate.
    box.identity_ca.write_bytes(box.identity_ca.read_bytes() + (env.pki / "ca.crt").read_bytes())
    r = box.medtls("reload")
    assert r.returncode == 0, r.stdout + r.stderr
    tls = box.pacs_tls()
    # Control: the short-lived certificate is served and works while valid.
    sv.store(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, path, tls=tls)
    left = expires.not_valid_after_utc.timestamp() - time.time()
    assert 0 < left < LIFETIME + 5, left
    time.sleep(left + 2)
    r = box.enroll("--force")
    assert r.returncode == 1, "the CA is down: no renewal may succeed"
    refused = sv.store(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, path, tls=tls, check=False)
    assert refused.returncode != 0, "a LAN peer was served with an expired certificate"
    status = box.medtls("status")
    text = status.stdout + status.stderr
    assert ("EXPIRED" in text and str(gen.name) in text) or "live" in text, text
    # A restart with the expired identity refuses to serve, naming the reason.
    env.stop_medtls()
    with pytest.raises(LabError):
        env.start_medtls()
    assert "expired" in env.medtls_log().lower(), env.medtls_log()[-1500:]
