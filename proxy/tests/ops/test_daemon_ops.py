"""Operations of a real medtls daemon process: sd_notify, status, metrics, audit, reload, drain."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import threading
import time

import pytest
from conftest import echo_once
from prometheus_client.parser import text_string_to_metric_families

from . import promparse
from .atna import summary, validate_event
from .harness import Box, close_cleanly, wait_until


def _serial(sock: ssl.SSLSocket) -> int:
    from cryptography import x509

    return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).serial_number


def test_ready_metrics_status_and_audit(tmp_path, fresh_pki, box_factory, rsyslog_factory):
    arr_cert, arr_key = fresh_pki.issue("arr", ips=("127.0.0.1",))
    receiver = rsyslog_factory(fresh_pki.ca, arr_cert, arr_key)
    receiver.start()
    box = box_factory(audit_port=receiver.port)
    # READY=1 came only after the listener was open: a client connects at once
    with box.connect() as s:
        assert echo_once(s, b"ping" * 1000) == b"ping" * 1000
        version, cipher = s.version(), s.cipher()[0]
        assert close_cleanly(s) == b""
    # an unauthorised client: trusted CA, identity not in the ACL
    other_cert, other_key = fresh_pki.issue("intruder", cn="intruder")
    ctx = box.client_context()
    ctx.load_cert_chain(str(other_cert), str(other_key))
    with contextlib.suppress(OSError), box.connect(ctx) as s:
        s.recv(1)
    wait_until(lambda: "result=acl_denied" in box.log(), what="acl_denied log line")

    text = box.scrape()
    fams = promparse.parse(text)
    parsed = {f.name: f for f in text_string_to_metric_families(text)}  # the reference parser
    assert parsed["medtls_connections"].type == "counter"
    assert promparse.value(fams, "medtls_ready") == 1
    assert (
        promparse.value(
            fams, "medtls_connections_total", direction="inbound", peer="svc", result="ok"
        )
        == 1
    )
    assert (
        promparse.value(
            fams, "medtls_connections_total", direction="inbound", peer="svc", result="acl_denied"
        )
        == 1
    )
    assert (
        promparse.value(
            fams, "medtls_handshake_failures_total", direction="inbound", reason="acl_denied"
        )
        == 1
    )
    assert (
        promparse.value(
            fams, "medtls_bytes_total", direction="inbound", peer="svc", stream="lan_to_device"
        )
        == 4000
    )
    assert (
        promparse.value(
            fams, "medtls_bytes_total", direction="inbound", peer="svc", stream="device_to_lan"
        )
        == 4000
    )
    assert (
        promparse.value(fams, "medtls_tls_connections_total", version=version, cipher=cipher) == 1
    )
    assert promparse.total(fams, "medtls_connections_active") == 0
    expiry = promparse.value(
        fams,
        "medtls_certificate_expiry_seconds",
        role="identity",
        subject="CN=box-v1",
        path=str(box.cert),
    )
    assert 89 * 86400 < expiry <= 90 * 86400  # deprecated name, kept one release
    from cryptography import x509

    ref = x509.load_pem_x509_certificate(box.cert.read_bytes())
    labels = {"role": "identity", "subject": "CN=box-v1", "path": str(box.cert)}
    assert (
        promparse.value(fams, "medtls_certificate_not_after_timestamp_seconds", **labels)
        == ref.not_valid_after_utc.timestamp()
    )
    assert (
        promparse.value(fams, "medtls_certificate_not_before_timestamp_seconds", **labels)
        == ref.not_valid_before_utc.timestamp()
    )
    # two handshakes reached the TLS stage; one was established and timed
    hs = parsed["medtls_handshake_duration_seconds"]
    assert hs.type == "histogram"
    assert (
        promparse.value(fams, "medtls_handshake_duration_seconds_count", direction="inbound") == 1
    )
    assert (
        0 < promparse.value(fams, "medtls_handshake_duration_seconds_sum", direction="inbound") < 5
    )
    assert (
        promparse.value(
            fams, "medtls_handshake_duration_seconds_bucket", direction="inbound", le="+Inf"
        )
        == 1
    )
    assert (
        promparse.value(
            fams, "medtls_handshake_failures_total", direction="inbound", reason="unknown_ca"
        )
        == 0
    )  # every reason has its series from the start
    from medtls import __version__

    assert promparse.value(fams, "medtls_build_info", version=__version__) == 1
    assert promparse.value(fams, "medtls_clock_synchronized") == 1
    assert promparse.value(fams, "medtls_reloads_total", result="ok") == 0

    from medtls import __version__

    rc, status = box.status_json()
    assert rc == 0, status
    assert status["health"] == "OK"
    assert status["version"] == __version__
    assert status["device"]["identity_subject"] == "CN=box-v1"
    assert status["listeners"][0]["address"] == f"127.0.0.1:{box.port}"
    svc = next(p for p in status["peers"] if p["name"] == "svc")
    assert svc["last_success_identity"] == "CN=pacs" or "pacs" in svc["last_success_identity"]
    assert svc["last_failure_reason"] == "acl_denied"
    human = box.cli("status")
    assert human.returncode == 0
    for needle in (
        f"medtls: OK  (version {__version__}, pid ",
        "CN=box-v1",
        f"127.0.0.1:{box.port}",
        "svc",
        "acl_denied",
        "synchronised",
    ):
        assert needle in human.stdout, human.stdout

    conn_lines = [line for line in box.log().splitlines() if "event=connection" in line]
    assert len(conn_lines) == 2
    assert f"device_port={box_echo_port(box)}" in conn_lines[0]
    assert f"tls={version}" in conn_lines[0] and "result=ok" in conn_lines[0]

    records = receiver.wait_for(3)
    events = [summary(r["msg"]) for r in records]
    for r in records:
        assert validate_event(r["msg"]) == []
    assert (events[0]["event"], events[0]["types"]) == ("110100", ["110120"])
    auth = [e for e in events if e["types"] == ["110126"]]
    assert [e["outcome"] for e in auth] == ["0", "4"]
    assert "acl_denied" in auth[1]["details"]["Alert Description"]


def box_echo_port(box: Box) -> int:
    import yaml

    return yaml.safe_load(box.config_path.read_text())["inbound"][0]["device_port"]


# ------------------------------------------------------------------ reload


def _rotate(box: Box, pki, cn: str) -> None:
    """Replace the identity cert+key in place, as a renewal tool does (atomic renames)."""
    cert, key = pki.issue("box-next", cn=cn, ips=("127.0.0.1",))
    os.replace(key, box.key)
    os.replace(cert, box.cert)


def test_reload_under_load_keeps_connections_and_uses_new_cert(fresh_pki, box_factory):
    box = box_factory()
    with box.connect() as probe:
        old_serial = _serial(probe)
        close_cleanly(probe)
    established = [box.connect() for _ in range(20)]
    for i, s in enumerate(established):
        assert echo_once(s, f"before-{i}".encode()) == f"before-{i}".encode()

    # load: new connections keep coming while the reload happens; none may fail
    stop, failures, done = threading.Event(), [], []

    def churn():
        while not stop.is_set():
            try:
                with box.connect() as s:
                    assert echo_once(s, b"x" * 2048) == b"x" * 2048
                    close_cleanly(s)
                    done.append(_serial(s) if False else 1)
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    n_notify = len(box.notify.messages)
    _rotate(box, fresh_pki, "box-v2")
    started = time.monotonic()
    result = box.cli("reload")
    reload_seconds = time.monotonic() - started
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(10)
    assert result.returncode == 0, result.stderr
    assert "ok, configuration generation 2" in result.stdout
    assert failures == []
    assert len(done) > 10

    # every established connection survived and still relays both ways, then closes cleanly
    for i, s in enumerate(established):
        assert echo_once(s, f"after-{i}".encode()) == f"after-{i}".encode()
        assert close_cleanly(s) == b""
    with box.connect() as s:
        assert _serial(s) != old_serial
        assert "box-v2" in str(s.getpeercert()["subject"])
        close_cleanly(s)

    # systemd saw RELOADING=1 (with MONOTONIC_USEC) and then READY=1 again
    i = box.notify.wait_for("RELOADING=1", after=n_notify)
    assert "MONOTONIC_USEC=" in box.notify.messages[i][1]
    box.notify.wait_for("READY=1", after=i)
    fams = promparse.parse(box.scrape())
    assert promparse.value(fams, "medtls_reloads_total", result="ok") == 1
    assert promparse.value(fams, "medtls_config_generation") == 2
    assert (
        promparse.value(
            fams,
            "medtls_certificate_expiry_seconds",
            role="identity",
            subject="CN=box-v2",
            path=str(box.cert),
        )
        > 0
    )
    assert promparse.total(fams, "medtls_connections_total", result="reset") == 0
    print(
        f"reload under load: {len(done)} connections during the test, "
        f"reload round trip {reload_seconds:.3f}s"
    )


@pytest.mark.parametrize("breakage", ["key_mismatch", "garbage", "expired"])
def test_bad_cert_on_reload_keeps_service(fresh_pki, box_factory, breakage):
    box = box_factory()
    with box.connect() as s:
        old_serial = _serial(s)
        close_cleanly(s)
    held = box.connect()
    assert echo_once(held, b"held") == b"held"
    if breakage == "key_mismatch":
        _, other_key = fresh_pki.issue("unrelated")
        os.replace(other_key, box.key)
    elif breakage == "garbage":
        box.cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    else:
        cert, key = fresh_pki.issue("old", cn="box-old", days=-1, not_before_days=-30)
        os.replace(key, box.key)
        os.replace(cert, box.cert)
    result = box.cli("reload")
    assert result.returncode == 1
    assert "FAILED, the running configuration stays in force" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one clear line, no traceback
    assert (
        "identity" in result.stderr
        or str(box.cert) in result.stderr
        or str(box.key) in result.stderr
    ), result.stderr
    # still serving, with the old certificate, old connection intact
    assert echo_once(held, b"still") == b"still"
    assert close_cleanly(held) == b""
    with box.connect() as s:
        assert _serial(s) == old_serial
        assert echo_once(s, b"new") == b"new"
        close_cleanly(s)
    rc, status = box.status_json()
    assert rc == 1 and status["health"] == "WARNING"
    assert status["reloads"]["last_result"] == "failed"
    fams = promparse.parse(box.scrape())
    assert promparse.value(fams, "medtls_reloads_total", result="failed") == 1
    assert promparse.value(fams, "medtls_config_generation") == 1
    assert "reload rejected" in box.log()


# ------------------------------------------------------------------ drain, watchdog, status


def test_sigterm_drains_then_exits(box_factory):
    # a long grace period: the process must exit because the last connection ended, not
    # because the grace period ran out (CLI calls below are slow on a loaded machine)
    limits = {"handshake_timeout": 3, "connect_timeout": 3, "drain_timeout": 20}
    box = box_factory(extra={"limits": limits})
    held = box.connect()
    assert echo_once(held, b"before") == b"before"
    n = len(box.notify.messages)
    box.signal(signal.SIGTERM)
    box.notify.wait_for("STOPPING=1", after=n)
    # no new connections once draining
    with pytest.raises(OSError):
        box.connect(timeout=1).close()
    rc, status = box.status_json()
    assert rc == 2 and status["draining"] is True
    # the established one keeps working during the grace period and ends cleanly
    assert echo_once(held, b"during drain") == b"during drain"
    started = time.monotonic()
    assert close_cleanly(held) == b""
    box.proc.wait(10)
    assert box.proc.returncode == 0
    assert time.monotonic() - started < 8  # exits once the last connection is done, not at 20 s
    assert (
        "result=ok" in [line for line in box.log().splitlines() if "event=connection" in line][-1]
    )
    assert box.cli("status").returncode == 3  # daemon gone: UNKNOWN


def test_sigterm_grace_period_closes_idle_connections(box_factory):
    box = box_factory()
    held = box.connect()
    assert echo_once(held, b"x") == b"x"
    started = time.monotonic()
    box.signal(signal.SIGTERM)
    box.proc.wait(10)
    waited = time.monotonic() - started
    assert 2.5 < waited < 10, waited  # limits.drain_timeout is 3 s
    # Cut by the grace period: reset, not a clean end (read on the TCP socket itself: Python's
    # TLS layer reports a reset as an EOF).
    raw = socket.socket(fileno=os.dup(held.fileno()))
    with pytest.raises(ConnectionResetError):
        raw.recv(10)
    raw.close()
    assert "result=shutdown" in box.log()


def test_watchdog_pings_come_from_the_serving_loop(box_factory):
    box = box_factory(watchdog_usec=1_000_000)
    time.sleep(1.6)
    pings = [t for t, m in box.notify.messages if m == "WATCHDOG=1"]
    assert len(pings) >= 2
    box.signal(signal.SIGSTOP)  # a hung process sends nothing
    try:
        time.sleep(0.2)
        count = len([m for m in box.notify.texts() if m == "WATCHDOG=1"])
        time.sleep(1.5)
        assert len([m for m in box.notify.texts() if m == "WATCHDOG=1"]) == count
    finally:
        box.signal(signal.SIGCONT)
    n = len(box.notify.messages)
    box.notify.wait_for("WATCHDOG=1", after=n, timeout=3)


def test_status_reports_unreachable_daemon(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "medtls.cli", "status", "--socket", str(tmp_path / "nope.sock")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 3
    assert "UNKNOWN: cannot reach the medtls daemon" in r.stderr
    assert "Traceback" not in r.stderr


def test_certificate_renewal_on_disk_triggers_reload(tmp_path, fresh_pki, box_factory):
    box = box_factory(
        extra={"control": {"socket": str(tmp_path / "control.sock"), "watch_files": True}}
    )
    with box.connect() as s:
        old_serial = _serial(s)
        close_cleanly(s)
    _rotate(box, fresh_pki, "box-renewed")
    started = time.monotonic()
    wait_until(lambda: box.status_json()[1].get("generation") == 2, timeout=8, what="auto reload")
    print(f"renewal picked up after {time.monotonic() - started:.2f}s")
    with box.connect() as s:
        assert _serial(s) != old_serial
        close_cleanly(s)
    assert "reload: files changed" in box.log()


# ------------------------------------------------------------------ clock safety

UNSYNCED_CLOCK = {"require_sync": True, "not_before": "2100-01-01"}  # the clock is "wrong"


def test_unsynchronised_clock_is_critical_in_status_and_metrics(box_factory):
    box = box_factory(extra={"clock": UNSYNCED_CLOCK})
    r = box.cli("status")
    assert r.returncode == 2
    assert "clock:     NOT synchronised" in r.stdout
    assert "CRITICAL: clock not synchronised, certificates are not validated" in r.stdout
    fams = promparse.parse(box.scrape())
    assert promparse.value(fams, "medtls_clock_synchronized") == 0
    assert promparse.value(fams, "medtls_certificate_validation_allowed") == 0
    assert "refusing certificate validation until it is" in box.log()


def test_unsynchronised_clock_refuses_tls(box_factory):
    box = box_factory(extra={"clock": UNSYNCED_CLOCK})
    with pytest.raises((OSError, AssertionError)), box.connect() as s:
        assert echo_once(s, b"must not pass") == b"must not pass"
    wait_until(lambda: "result=clock_unsynced" in box.log(), what="clock_unsynced")
    fams = promparse.parse(box.scrape())
    assert (
        promparse.value(
            fams, "medtls_handshake_failures_total", direction="inbound", reason="clock_unsynced"
        )
        == 1
    )


def test_unsynchronised_clock_allowed_when_configured(box_factory):
    box = box_factory(extra={"clock": {**UNSYNCED_CLOCK, "require_sync": False}})
    with box.connect() as s:
        assert echo_once(s, b"ok") == b"ok"
        close_cleanly(s)
    r = box.cli("status")
    assert r.returncode == 1
    assert "WARNING: clock not synchronised, validating anyway" in r.stdout
