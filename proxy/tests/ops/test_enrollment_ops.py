"""A box with `enrollment` in operation: it starts before its first certificate exists (fail
closed: no listener, status says why), comes into service with the reload `medtls enroll` sends
after installing one, audits every later change of the identity's serial, and reports the
enrollment state (from the enroll process's state.json) in status and metrics."""

from __future__ import annotations

import random
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import Medtls, echo_once, free_port
from medtls.config import load_config
from medtls.core.enrollment import failed, succeeded, write_state
from medtls.enroll.install import install, notify_daemon, serial_hex

from . import promparse
from .atna import summary, validate_event
from .harness import NotifySocket, close_cleanly, wait_until

CA_DOWN = "directory https://ca.test/acme/directory: connection refused"


class AuditSocket:
    """The local syslog socket of `audit.transport: local`: collects the ATNA messages."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(1 << 20).decode()
            except (TimeoutError, BlockingIOError):
                return self.messages
            self.messages.append(data[data.index("<AuditMessage") :])

    def close(self):
        self.sock.close()


class EnrollingBox(Medtls):
    """`medtls run` with enrollment configured and no certificate installed yet."""

    def __init__(self, tmp: Path, pki, echo_port: int):
        self.tmp, self.pki = tmp, pki
        self.port, self.metrics_port = free_port(), free_port()
        self.control = str(tmp / "control.sock")
        self.state_dir = tmp / "enrollment"
        self.state_dir.mkdir()
        (tmp / "synchronized").write_text("")
        self.client_cert, self.client_key = pki.issue("pacs", cn="pacs")
        self.audit = AuditSocket(tmp / "audit.sock")
        raw = {
            "device": {"ip": "127.0.0.1"},
            "mode": "explicit",
            "trust": {"ca": str(pki.ca)},
            "inbound": [{"name": "svc", "listen": f"127.0.0.1:{self.port}",
                         "device_port": echo_port, "allow": [{"cn": "pacs"}]}],
            "limits": {"handshake_timeout": 3, "connect_timeout": 3, "drain_timeout": 3},
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
            "clock": {"require_sync": True, "sync_file": str(tmp / "synchronized")},
            "control": {"socket": self.control, "watch_files": False},
            "audit": {"transport": "local", "local_socket": str(tmp / "audit.sock")},
            "enrollment": {"acme": {"directory": "https://ca.test/acme/directory"},
                           "state_dir": str(self.state_dir)},
        }  # fmt: skip
        path = tmp / "medtls.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.cfg = load_config(path)
        self.notify = NotifySocket(tmp / "notify.sock")
        super().__init__(path, tmp / "medtls.log", {"NOTIFY_SOCKET": self.notify.path})

    def enroll(self, cn: str) -> str:
        """What a successful `medtls enroll` does: install, record the state, reload."""
        cert, key = self.pki.issue(cn, cn=cn, ips=("127.0.0.1",))
        chain = cert.read_bytes()
        install(self.cfg, key.read_bytes(), chain)
        from cryptography import x509

        leaf = x509.load_pem_x509_certificate(chain)
        now = time.time()
        nb, na = leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()
        state = succeeded(now, serial_hex(leaf), nb, na, 0.667, None, random.Random(1))
        write_state(self.cfg.enrollment.state_path, state)
        return serial_hex(leaf)

    def status(self, *args: str) -> str:
        import subprocess
        import sys

        return subprocess.run(
            [sys.executable, "-m", "medtls.cli", "status", *args, "--socket", self.control],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip

    def scrape(self) -> dict:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return promparse.parse(resp.read().decode())

    def tls_echo(self) -> bytes:
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.pki.ca))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port), 5)) as s:
            got = echo_once(s, b"dicom" * 100)
            close_cleanly(s)
            return got

    def stop(self, timeout: float = 15) -> int:
        rc = super().stop(timeout)
        self.notify.close()
        self.audit.close()
        return rc


@pytest.fixture
def enrolling_box(tmp_path, fresh_pki, echo_server):
    # the enroll process already tried once and could not reach the CA
    state_path = tmp_path / "enrollment" / "state.json"
    box = None
    try:
        box = EnrollingBox(tmp_path, fresh_pki, echo_server.port)
        write_state(state_path, failed(None, time.time(), CA_DOWN, random.Random(1)))
        yield box
    finally:
        if box is not None:
            box.stop()


def _import_json(text: str) -> dict:
    import json

    return json.loads(text)


def test_enrolling_box_is_fail_closed_then_serves_after_the_first_certificate(enrolling_box):
    box = enrolling_box
    box.notify.wait_for("READY=1", timeout=15)  # systemd sees a started service: no restart loop
    box.wait_log("enrolling: no identity certificate yet")
    assert box.proc.poll() is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", box.port), timeout=5).close()

    status = _import_json(box.status("--json"))
    assert status["health"] == "CRITICAL"
    assert status["enrollment"]["phase"] == "enrolling"
    assert status["enrollment"]["last_error"] == CA_DOWN
    assert "no identity certificate yet" in status["snapshot"]["enrolling"]
    human = box.status()
    assert "enrollment: enrolling; next attempt" in human, human
    assert (
        f"CRITICAL: enrolling: no identity certificate issued yet; last error: {CA_DOWN}" in human
    )
    fams = box.scrape()
    assert promparse.value(fams, "medtls_ready") == 0
    assert promparse.value(fams, "medtls_enrollment_phase", phase="enrolling") == 1
    assert promparse.value(fams, "medtls_enrollment_phase", phase="valid") == 0
    assert promparse.value(fams, "medtls_enrollment_attempts") == 1
    assert promparse.value(fams, "medtls_enrollment_last_failure_timestamp_seconds") > 0

    # a reload while nothing is installed changes nothing (still fail closed)
    assert notify_daemon(box.cfg).startswith("reload refused")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", box.port), timeout=5).close()

    first = box.enroll("box-v1")
    assert notify_daemon(box.cfg).startswith("reloaded: generation")
    assert box.tls_echo() == b"dicom" * 100
    status = _import_json(box.status("--json"))
    assert status["health"] == "OK", status
    assert status["enrollment"]["phase"] == "valid"
    assert status["enrollment"]["serial"] == first
    assert f"enrollment: valid; serial {first}; next renewal 20" in box.status()
    fams = box.scrape()
    assert promparse.value(fams, "medtls_ready") == 1
    assert promparse.value(fams, "medtls_enrollment_phase", phase="valid") == 1
    assert promparse.value(fams, "medtls_enrollment_phase", phase="enrolling") == 0
    assert promparse.value(fams, "medtls_enrollment_attempts") == 0
    assert promparse.value(fams, "medtls_enrollment_last_failure_timestamp_seconds") == 0
    renewal = promparse.value(fams, "medtls_certificate_next_renewal_timestamp_seconds")
    assert time.time() + 50 * 86400 < renewal < time.time() + 61 * 86400  # 2/3 of 90 days

    # a renewal: the reload that brings a new serial is logged and audited once, both serials
    before = len(box.audit.drain())
    second = box.enroll("box-v2")
    assert notify_daemon(box.cfg).startswith("reloaded: generation")
    line = box.wait_log("identity certificate replaced")
    changes = [x for x in line.splitlines() if "identity certificate replaced" in x]
    assert (
        len(changes) == 1 and f"serial {first} " in changes[0] and f"serial {second} " in changes[0]
    )
    msgs = wait_until(lambda: box.audit.drain()[before:] or None, what="audit messages")
    time.sleep(0.3)
    msgs = box.audit.drain()[before:]
    replaced = [m for m in msgs if "identity certificate replaced" in str(summary(m)["details"])]
    assert len(replaced) == 1, msgs
    assert validate_event(replaced[0]) == []
    event = summary(replaced[0])
    assert (event["event"], event["types"], event["outcome"]) == ("110113", ["110129"], "0")
    detail = event["details"]["Alert Description"]
    assert f"serial {first} " in detail and f"serial {second} " in detail
    assert box.tls_echo() == b"dicom" * 100


def test_a_start_without_enrollment_and_without_a_certificate_still_fails(tmp_path, fresh_pki):
    """Hand-issued identity: a missing certificate stays a start error, as before."""
    _cert, key = fresh_pki.issue("box", ips=("127.0.0.1",))
    raw = {
        "device": {"ip": "127.0.0.1"}, "mode": "explicit",
        "identity": {"certificate": str(tmp_path / "missing.crt"), "key": str(key)},
        "trust": {"ca": str(fresh_pki.ca)},
        "inbound": [{"name": "svc", "listen": f"127.0.0.1:{free_port()}", "device_port": 1,
                     "allow": [{"cn": "pacs"}]}],
        "control": {"socket": str(tmp_path / "c.sock")}, "metrics": {"enabled": False},
    }  # fmt: skip
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(raw))
    m = Medtls(tmp_path / "m.yaml", tmp_path / "m.log")
    try:
        assert m.proc.wait(30) != 0
    finally:
        m.stop()
    assert "missing.crt" in m.log() and "enrolling" not in m.log()
