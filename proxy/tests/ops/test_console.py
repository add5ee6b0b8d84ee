"""`medtls console`: the status screen a technician sees on the box's HDMI or serial console."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from medtls.ops import boxstate, console

NOW = 1_800_000_000.0


def status(**over) -> dict:
    """A healthy daemon's status dict, as `medtls status --json` prints it."""
    base = {
        "ok": True,
        "now": NOW,
        "pid": 812,
        "started": NOW - 3 * 86400,
        "ready": True,
        "draining": False,
        "generation": 4,
        "device": {
            "ip": "198.18.0.10",
            "mac": "02:00:5e:10:00:10",
            "identity_subject": "CN=ct-box-1,O=Hospital",
            "identity_fingerprint": "5f1c",
        },
        "clock": {
            "synchronized": True,
            "detail": "systemd-timesyncd reports synchronized",
            "require_sync": True,
            "validation_allowed": True,
        },
        "connections": {"active": 2, "total": 18230},
        "listeners": [{"name": "outbound", "direction": "outbound", "address": "0.0.0.0:15001"}],
        "peers": [
            {
                "name": "pacs",
                "direction": "outbound",
                "active": 2,
                "total": 18011,
                "last_success": NOW - 4,
                "last_success_identity": "CN=pacs,O=Hospital",
                "last_failure": None,
                "last_failure_reason": "",
            }
        ],
        "certificates": [
            {
                "role": "identity",
                "subject": "CN=ct-box-1,O=Hospital",
                "path": "/etc/medtls/device.crt",
                "not_after": NOW + 200 * 86400,
            }
        ],
        "certificate_problems": [],
        "reloads": {"ok": 3, "failed": 0, "last_result": "ok", "last_time": NOW - 3600},
        "audit": {"transport": "local", "sent": 10, "queued": 0, "dropped": 0},
    }
    base.update(over)
    return base


def test_healthy_screen_shows_state_traffic_clock_certificate_and_peer():
    text = console.screen(status(), now=NOW, hostname="ct-box-1")
    lines = text.splitlines()
    assert lines[0].startswith("medtls box ct-box-1  2027-01-15")
    assert lines[1] == "state:     HEALTHY: serving"
    assert lines[2] == "traffic:   passing, TLS enforced"
    assert "clock:     synchronised (systemd-timesyncd reports synchronized)" in text
    assert "identity     expires in 200d" in text
    assert "last success 2027-01-15 07:59:56Z (4s ago)  CN=pacs,O=Hospital" in text
    assert "last failure never" in text
    assert lines[-1] == console.PROMPT


def test_daemon_down_is_fail_closed_with_the_reason():
    text = console.screen(None, "cannot reach the medtls daemon at /run/medtls/control.sock", NOW)
    assert "state:     FAIL CLOSED: medtls not running: cannot reach the medtls daemon" in text
    assert "traffic:   BLOCKED (fail closed): the device's traffic does not leave the box" in text
    assert "medtls not running: cannot reach the medtls daemon at /run/medtls/control.sock" in text
    assert text.rstrip().endswith(console.PROMPT)


def test_a_daemon_that_does_not_answer_is_fail_closed_even_without_certificate():
    # An enrolling box runs its daemon (status says enrolling); a silent one is down.
    text = console.screen(None, "connection refused", NOW, certificate_present=False)
    assert "state:     FAIL CLOSED: medtls not running (and no identity certificate)" in text


def test_unsynchronised_clock_blocks_tls():
    clock = {"synchronized": False, "detail": "no NTP", "require_sync": True}
    text = console.screen(status(clock={**clock, "validation_allowed": False}), now=NOW)
    assert "state:     CLOCK NOT SYNCHRONISED: clock not synchronised: no NTP" in text
    assert "traffic:   BLOCKED (fail closed): TLS refused until the clock is synchronised" in text
    assert "CRITICAL: clock not synchronised, certificates are not validated" in text


def test_peer_failure_shows_as_warning_with_reason():
    peer = {
        **status()["peers"][0],
        "last_success": NOW - 600,
        "last_failure": NOW - 30,
        "last_failure_reason": "connect_failed",
    }
    text = console.screen(status(peers=[peer]), now=NOW)
    assert "state:     WARNING: peer pacs: last connection failed (connect_failed) 30s ago" in text
    assert "last failure 2027-01-15 07:59:30Z (30s ago)  connect_failed" in text


def test_a_small_screen_keeps_headline_problems_and_prompt():
    peers = [
        {**status()["peers"][0], "name": f"pacs{i}", "last_failure": NOW - 5, "last_success": None}
        for i in range(12)
    ]
    text = console.screen(status(peers=peers), now=NOW, rows=24, cols=60)
    lines = text.splitlines()
    assert len(lines) <= 24
    assert all(len(line) <= 60 for line in lines)
    assert lines[1].startswith("state:     WARNING")
    assert any(line.startswith("... ") and "more lines: medtls status" in line for line in lines)
    assert "problems:" in lines
    assert lines[-1] == console.PROMPT


def test_console_and_classify_agree_on_every_state():
    for state, st in [
        (boxstate.HEALTHY, status()),
        (boxstate.FAIL_CLOSED, status(ready=False)),
        (boxstate.FAIL_CLOSED, status(draining=True)),
        (boxstate.NO_CERTIFICATE, status(device={"identity_subject": None})),
    ]:
        assert boxstate.classify(st, now=NOW)[0] == state
        assert f"state:     {console.STATE_TITLES[state]}" in console.screen(st, now=NOW)


# ------------------------------------------------------------------ on a terminal


def _fake_login(tmp_path):
    login = tmp_path / "fake-login"
    login.write_text(
        "#!/bin/sh\n"
        "if [ -t 0 ] && [ -t 1 ]; then tty=yes; else tty=no; fi\n"
        'echo "FAKE LOGIN args=$# tty=$tty"\n'
    )
    login.chmod(0o755)
    return login


class Terminal:
    """`medtls console` on a pty, as agetty hands it the terminal."""

    def __init__(self, args: list[str]):
        self.master, slave = pty.openpty()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medtls.cli", "console", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env=env,
        )
        os.close(slave)
        self.seen = b""

    def read_until(self, needle: bytes, timeout: float = 15) -> bytes:
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while needle not in self.seen[start:] and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the program ended: the pty's slave side is gone
                    break
        assert needle in self.seen[start:], f"no {needle!r} on the terminal: {self.seen[-3000:]!r}"
        return self.seen[start:]

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait(timeout=10)
        os.close(self.master)
        return rc


def test_terminal_redraws_while_daemon_is_down_and_enter_starts_login(tmp_path):
    login = _fake_login(tmp_path)
    (tmp_path / "device.crt").write_text("(a certificate)")
    config = tmp_path / "medtls.yaml"
    config.write_text(
        f"identity: {{certificate: device.crt, key: device.key}}\n"
        f"control: {{socket: {tmp_path / 'none.sock'}}}\n"
    )
    term = Terminal(["--config", str(config), "--login", str(login), "--interval", "0.3"])
    try:
        first = term.read_until(console.PROMPT.encode())
        assert b"medtls not running: cannot reach the medtls daemon" in first
        assert b"FAIL CLOSED" in first
        term.read_until(console.CLEAR.encode() + b"medtls box")  # redrawn
        term.type(b"\n")
        out = term.read_until(b"FAKE LOGIN")
        assert b"FAKE LOGIN args=0 tty=yes" in out
        assert term.proc.wait(timeout=10) == 0
    finally:
        term.close()


def test_terminal_shows_a_running_daemons_status(tmp_path, box_factory):
    box = box_factory()
    login = _fake_login(tmp_path)
    term = Terminal(["--config", str(box.config_path), "--login", str(login), "--interval", "0.5"])
    try:
        screen = term.read_until(console.PROMPT.encode()).decode()
        assert "state:     HEALTHY: serving" in screen
        assert "traffic:   passing, TLS enforced" in screen
        assert "medtls: OK" in screen
        assert "svc            inbound" in screen
        assert "identity     expires in" in screen
        box.stop()
        term.read_until(b"FAIL CLOSED: medtls not running")
        term.type(b"\n")
        term.read_until(b"FAKE LOGIN")
    finally:
        term.close()
