"""`workers:` > 1 keeps what a single process guarantees: certificates are not validated while the
clock is unsynchronised, every authentication is audited, systemd hears READY=1 only once every
worker serves, `medtls status` and `medtls reload` speak for every worker, and a worker that hangs
or dies takes the service down for systemd to restart."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import echo_once

from .atna import summary
from .harness import Box, close_cleanly, wait_until

UNSYNCED_CLOCK = {"require_sync": True, "not_before": "2100-01-01"}
WORKERS = {"workers": 2}


def _workers(box: Box) -> list[int]:
    path = Path(f"/proc/{box.proc.pid}/task/{box.proc.pid}/children")
    return [int(p) for p in path.read_text().split()]


def _count(box: Box, needle: str) -> int:
    return box.log().count(needle)


def test_ready_once_every_worker_serves_then_stopping(box_factory):
    box = box_factory(extra=WORKERS)
    assert len(_workers(box)) == 2
    assert _count(box, "listening svc") == 2  # READY=1 came after both workers listened
    assert [m for m in box.notify.texts() if "READY=1" in m] == ["READY=1\nSTATUS=2 workers"]
    for _ in range(6):
        with box.connect() as s:
            assert echo_once(s, b"ping") == b"ping"
            assert close_cleanly(s) == b""
    box.signal(signal.SIGTERM)
    assert box.proc.wait(10) == 0
    assert any(m.startswith("STOPPING=1") for m in box.notify.texts())


def test_no_worker_validates_certificates_on_an_unsynchronised_clock(box_factory):
    box = box_factory(extra={**WORKERS, "clock": UNSYNCED_CLOCK})
    for _ in range(8):  # SO_REUSEPORT spreads these over both workers
        with pytest.raises((OSError, AssertionError)), box.connect() as s:
            assert echo_once(s, b"must not pass") == b"must not pass"
    wait_until(lambda: _count(box, "result=clock_unsynced") == 8, what="8 refusals")
    assert _count(box, "result=ok") == 0
    assert _count(box, "refusing certificate validation until it is") == 2  # once per worker


def test_every_worker_audits(fresh_pki, box_factory, rsyslog_factory):
    arr_cert, arr_key = fresh_pki.issue("arr", ips=("127.0.0.1",))
    receiver = rsyslog_factory(fresh_pki.ca, arr_cert, arr_key)
    receiver.start()
    box = box_factory(audit_port=receiver.port, extra=WORKERS)
    for _ in range(6):
        with box.connect() as s:
            assert echo_once(s, b"ping") == b"ping"
            close_cleanly(s)
    events = [summary(r["msg"])["event"] for r in receiver.wait_for(8)]
    assert events.count("110100") == 2  # Application Start, one per worker
    assert events.count("110113") == 6  # every authenticated connection, whichever worker
    pids = {r["procid"] for r in receiver.wait_for(8)}
    assert pids == {str(p) for p in _workers(box)}


def test_a_hung_worker_stops_the_watchdog_pings(box_factory):
    box = box_factory(watchdog_usec=2_000_000, extra=WORKERS)
    box.notify.wait_for("WATCHDOG=1", timeout=5)
    hung = _workers(box)[0]
    os.kill(hung, signal.SIGSTOP)  # its loop no longer ticks; the other worker still does
    try:
        time.sleep(3.5)  # the parent's grace: 2 periods (1 s each) + 1 s
        n = len(box.notify.messages)
        time.sleep(2.5)
        assert "WATCHDOG=1" not in box.notify.texts()[n:]
    finally:
        os.kill(hung, signal.SIGCONT)
    box.notify.wait_for("WATCHDOG=1", after=len(box.notify.messages), timeout=5)


def test_a_worker_that_dies_stops_the_service(box_factory):
    box = box_factory(extra=WORKERS)
    first, second = _workers(box)
    os.kill(first, signal.SIGKILL)
    box.proc.wait(15)
    assert box.proc.returncode == 1  # systemd's Restart=on-failure starts it afresh
    assert f"worker (pid {first}) ended with exit -9: stopping the others" in box.log()
    with contextlib.suppress(ProcessLookupError):
        os.kill(second, 0)
        raise AssertionError("the other worker outlived the service")


def test_status_and_reload_answer_for_every_worker(box_factory):
    box = box_factory(extra=WORKERS)
    for _ in range(6):
        with box.connect() as s:
            assert echo_once(s, b"ping") == b"ping"
            close_cleanly(s)
    wait_until(lambda: box.status_json()[1]["connections"]["total"] == 6, what="6 connections")
    code, status = box.status_json()
    assert code == 0, status
    assert [w["pid"] for w in status["workers"]] == _workers(box)
    assert sum(p["total"] for p in status["peers"]) == 6
    r = box.cli("reload")
    assert r.returncode == 0 and "generation 2 in force" in r.stdout, r.stdout + r.stderr
    assert _count(box, "configuration generation 2 active") == 2  # both workers reloaded
    hung = _workers(box)[1]
    os.kill(hung, signal.SIGSTOP)
    try:
        r = box.cli("status")
    finally:
        os.kill(hung, signal.SIGCONT)
    assert r.returncode == 2, r.stdout
    assert "CRITICAL: worker 1 does not answer: no answer from the daemon" in r.stdout, r.stdout
