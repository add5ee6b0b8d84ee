"""Unit tests of the sans-io parts of medtls.ops (no sockets unless the test is about one)."""

from __future__ import annotations

import os
import socket
import time

import pytest
from medtls.config.ops import OpsConfig, parse_host_port, parse_ops_sections
from medtls.core import connlog
from medtls.ops import audit_xml, clock, control, health, sdnotify, syslog
from medtls.ops.metrics import Registry

from . import promparse
from .atna import summary, validate_event

# ------------------------------------------------------------------ config


def test_ops_defaults_when_sections_absent():
    cfg, problems = parse_ops_sections({"device": {"ip": "198.18.0.10"}})
    assert problems == []
    assert cfg == OpsConfig()
    assert (cfg.metrics.host, cfg.metrics.port) == ("127.0.0.1", 9750)
    assert cfg.clock.require_sync is True
    assert cfg.audit.transport == "local"


def test_ops_full_sections_parse():
    raw = {
        "metrics": {"listen": "[::1]:9100"},
        "audit": {
            "transport": "tls",
            "host": "198.18.0.50",
            "port": 6514,
            "ca": "/etc/medtls/arr-ca.pem",
            "queue_size": 50,
        },
        "clock": {"require_sync": False},
        "control": {"socket": "/tmp/x.sock", "watch_files": False},
    }
    cfg, problems = parse_ops_sections(raw)
    assert problems == []
    assert (cfg.metrics.host, cfg.metrics.port) == ("::1", 9100)
    assert cfg.audit.queue_size == 50 and cfg.audit.host == "198.18.0.50"
    assert cfg.clock.require_sync is False
    assert cfg.control.watch_files is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"metrics": {"listen": "pacs.local:9750"}}, ("metrics.listen", "host must be an IP")),
        ({"metrics": {"listen": "127.0.0.1:99999"}}, ("metrics.listen", "1-65535")),
        ({"metrics": {"port": 1}}, ("metrics.port", "unknown key")),
        ({"audit": {"transport": "udp"}}, ("audit.transport", "must be one of")),
        ({"audit": {"transport": "tls", "ca": "/x"}}, ("audit.host", "required")),
        ({"audit": {"transport": "tls", "host": "h"}}, ("audit.ca", "required")),
        ({"audit": {"queue_size": 0}}, ("audit.queue_size", "must be a positive integer")),
        ({"audit": {"ca": "relative.pem"}}, ("audit.ca", "absolute path")),
        ({"clock": {"require_sync": "yes"}}, ("clock.require_sync", "must be true or false")),
        ({"control": []}, ("control", "must be a mapping")),
    ],
)
def test_ops_config_errors_name_the_key(raw, expected):
    _, problems = parse_ops_sections(raw)
    assert len(problems) == 1, problems
    path, message = problems[0]
    assert path == expected[0]
    assert expected[1] in message


def test_clock_not_before():
    import datetime as dt

    cfg, problems = parse_ops_sections({"clock": {"not_before": dt.date(2026, 3, 1)}})
    assert problems == []
    assert cfg.clock.not_before == dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()
    cfg, problems = parse_ops_sections({"clock": {"not_before": "2026-03-01T12:00:00"}})
    assert problems == [] and cfg.clock.not_before > 0
    _, problems = parse_ops_sections({"clock": {"not_before": "soon"}})
    assert problems == [("clock.not_before", "must be a date like 2026-01-31, got 'soon'")]
    state = clock.assess(_facts(sync_file_exists=True), earliest=time.time() + 86400)
    assert not state.synchronized and state.source == "plausibility"


def test_host_port():
    assert parse_host_port("0.0.0.0:1") == ("0.0.0.0", 1)
    assert parse_host_port("localhost:9750") == ("127.0.0.1", 9750)  # as in listen: (one parser)
    with pytest.raises(ValueError):
        parse_host_port("9750")


# ------------------------------------------------------------------ sd_notify


def test_notify_message_and_watchdog_interval():
    assert sdnotify.notify_message(READY=1, STATUS="2 active\nx") == b"READY=1\nSTATUS=2 active x"
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "20000000"}, 7) == 10.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "8"}, 7) is None
    assert sdnotify.watchdog_interval({}, 7) is None
    assert sdnotify.socket_address("@abc") == b"\0abc"
    assert sdnotify.socket_address("relative") is None


def test_notifier_sends_datagrams(tmp_path):
    path = str(tmp_path / "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(2)
    try:
        n = sdnotify.Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        n.ready("up")
        assert rx.recv(4096) == b"READY=1\nSTATUS=up"
        assert n.ping(now=100.0) is True
        assert rx.recv(4096) == b"WATCHDOG=1"
        assert n.ping(now=100.2) is False  # not yet half of WATCHDOG_USEC
        assert n.ping(now=100.6) is True
        assert rx.recv(4096) == b"WATCHDOG=1"
        n.reloading()
        msg = rx.recv(4096).decode().split("\n")
        assert msg[0] == "RELOADING=1" and msg[1].startswith("MONOTONIC_USEC=")
        assert abs(int(msg[1].split("=")[1]) - sdnotify.monotonic_usec()) < 5_000_000
        n.stopping()
        assert rx.recv(4096) == b"STOPPING=1"
        n.close()
    finally:
        rx.close()


def test_notifier_without_systemd_is_silent():
    n = sdnotify.Notifier({})
    assert not n.enabled
    assert n.send(READY=1) is False


# ------------------------------------------------------------------ clock


def _facts(**kw):
    base = {
        "now": time.time(),
        "sync_file_exists": False,
        "adjtimex_state": 0,
        "adjtimex_status": 0,
    }
    base.update(kw)
    return clock.ClockFacts(**base)


def test_clock_assessment():
    assert clock.assess(_facts(sync_file_exists=True)).synchronized
    assert clock.assess(_facts()).synchronized
    assert not clock.assess(_facts(adjtimex_status=clock.STA_UNSYNC)).synchronized
    assert not clock.assess(_facts(adjtimex_state=clock.TIME_ERROR)).synchronized
    assert not clock.assess(_facts(adjtimex_state=None)).synchronized
    early = clock.assess(_facts(now=0, sync_file_exists=True))
    assert not early.synchronized and "1970-01-01" in early.detail


def test_clock_policy():
    unsynced = clock.ClockState(False, "kernel", "STA_UNSYNC")
    allowed, reason = clock.validation_allowed(unsynced, require_sync=True)
    assert not allowed and "refusing certificate validation" in reason
    allowed, reason = clock.validation_allowed(unsynced, require_sync=False)
    assert allowed and "NOT synchronised" in reason
    assert clock.validation_allowed(clock.ClockState(True, "k", ""), True)[0]


def test_clock_reads_this_machine():
    facts = clock.read_facts("/nonexistent/synchronized")
    assert facts.adjtimex_state is not None  # ctypes adjtimex works here
    assert isinstance(clock.assess(facts).synchronized, bool)


# ------------------------------------------------------------------ metrics


def test_metrics_render_parses_and_escapes():
    r = Registry()
    c = r.counter("medtls_test_total", "a counter\nwith newline", ("peer",))
    g = r.gauge("medtls_test_gauge", "a gauge")
    c.inc(peer='we"ird\\name\n')
    c.inc(2, peer="pacs")
    g.set(1.5)
    with pytest.raises(ValueError):
        c.inc(-1, peer="pacs")
    with pytest.raises(ValueError):
        c.inc(peer="pacs", extra="x")
    fams = promparse.parse(r.render())
    assert fams["medtls_test_total"]["type"] == "counter"
    assert promparse.value(fams, "medtls_test_total", peer='we"ird\\name\n') == 1
    assert promparse.value(fams, "medtls_test_total", peer="pacs") == 2
    assert promparse.value(fams, "medtls_test_gauge") == 1.5


# ------------------------------------------------------------------ audit XML

SRC = audit_xml.Source(audit_source_id="ct-box-1", site_id="Radiology", node_address="198.18.0.10")


def test_application_start_stop_valid():
    for started, code in ((True, "110120"), (False, "110121")):
        xml = audit_xml.application_activity(SRC, started=started)
        assert validate_event(xml) == []
        s = summary(xml)
        assert (s["event"], s["types"], s["outcome"]) == ("110100", [code], "0")


def test_node_authentication_success_and_failure_valid():
    ok = audit_xml.node_authentication(
        SRC,
        True,
        "198.18.0.20",
        "CN=pacs",
        "outbound",
        tls_version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
    )
    assert validate_event(ok) == []
    s = summary(ok)
    assert (s["event"], s["types"], s["outcome"]) == ("110113", ["110126"], "0")
    assert s["objects"] == ["198.18.0.20"]
    assert s["details"]["TLS Version"] == "TLSv1.3"
    bad = audit_xml.node_authentication(
        SRC, False, "198.18.0.99", direction="inbound", reason="unknown_ca: <x>&'\""
    )
    assert validate_event(bad) == []
    s = summary(bad)
    assert s["outcome"] == "4"
    assert "unknown_ca: <x>&'\"" in s["details"]["Alert Description"]
    requestor = [p for p in s["participants"] if p["UserIsRequestor"] == "true"]
    assert requestor[0]["NetworkAccessPointID"] == "198.18.0.99"


def test_configuration_change_valid():
    xml = audit_xml.configuration_change(SRC, True, "/etc/medtls/device.crt", "replaced")
    assert validate_event(xml) == []
    assert summary(xml)["types"] == ["110129"]
    xml = audit_xml.configuration_change(SRC, False, "/etc/medtls/medtls.yaml", "bad", False)
    assert validate_event(xml) == []
    assert summary(xml)["types"] == ["110131"]


def test_validator_catches_broken_messages():
    from .atna import validate_relaxng

    xml = audit_xml.application_activity(SRC, started=True)
    assert validate_relaxng(xml) == []
    assert validate_relaxng(xml.replace('UserIsRequestor="false"', 'UserIsRequestor="no"'))
    assert validate_relaxng(xml.replace('EventDateTime="', 'EventDateTime="yesterday'))
    assert validate_event(xml.replace('csd-code="110120"', 'code="110120"'))
    assert validate_event(xml.replace('EventOutcomeIndicator="0"', 'EventOutcomeIndicator="1"'))
    assert validate_event(
        xml.replace("<AuditSourceIdentification", "<Foo").replace(
            "</AuditSourceIdentification", "</Foo"
        )
    )


# ------------------------------------------------------------------ syslog


def test_rfc5424_message_and_octet_framing():
    msg = syslog.format_message("<AuditMessage/>", hostname="ct box", procid=42, when=0)
    assert msg.startswith(b"<85>1 1970-01-01T00:00:00.000000Z ctbox medtls 42 DICOM+RFC3881 - ")
    assert msg.endswith("\ufeff<AuditMessage/>".encode())
    framed = syslog.frame(msg)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(msg)
    warn = syslog.format_message("x", "h", severity=syslog.SEVERITY_WARNING)
    assert warn.startswith(b"<84>1 ")


def _collector():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    return srv


def test_sender_queues_while_unreachable_then_delivers_in_order():
    srv = _collector()
    port = srv.getsockname()[1]  # bound but not listening: connections are refused

    def connect():
        return socket.create_connection(("127.0.0.1", port), timeout=2)

    sender = syslog.AuditSender(connect, queue_size=3, retry_interval=0.05)
    sender.start()
    for i in range(5):
        sender.submit(f"m{i}".encode())
    time.sleep(0.2)
    assert sender.queued() == 3 and sender.dropped == 2 and sender.sent == 0
    srv.listen()
    conn, _ = srv.accept()
    conn.settimeout(3)
    data = b""
    while data.count(b" m") < 3:
        data += conn.recv(4096)
    assert data == b"2 m22 m32 m4"
    deadline = time.time() + 2
    while sender.sent < 3 and time.time() < deadline:
        time.sleep(0.01)
    assert sender.sent == 3 and sender.queued() == 0
    sender.stop(0.5)
    conn.close()
    srv.close()


def test_sender_reconnects_when_receiver_restarts():
    srv = _collector()
    srv.listen()
    port = srv.getsockname()[1]
    sender = syslog.AuditSender(
        lambda: socket.create_connection(("127.0.0.1", port), timeout=2), retry_interval=0.05
    )
    sender.start()
    sender.submit(b"one")
    c1, _ = srv.accept()
    c1.settimeout(2)
    assert c1.recv(100) == b"3 one"
    c1.close()  # receiver restarts: the next message must not vanish into the dead stream
    time.sleep(0.1)
    sender.submit(b"two")
    c2, _ = srv.accept()
    c2.settimeout(2)
    assert c2.recv(100) == b"3 two"
    sender.stop(0.5)
    c2.close()
    srv.close()


# ------------------------------------------------------------------ health


def _status(**kw):
    now = 1_800_000_000.0
    base = {
        "now": now,
        "pid": 1,
        "started": now - 100,
        "ready": True,
        "draining": False,
        "generation": 1,
        "listeners": [{"name": "outbound", "direction": "outbound", "address": "0.0.0.0:15001"}],
        "clock": {"synchronized": True, "detail": "ok", "require_sync": True},
        "certificates": [
            {
                "path": "/d.crt",
                "role": "identity",
                "subject": "CN=ct",
                "not_after": now + 90 * 86400,
            }
        ],
        "certificate_problems": [],
        "peers": [],
        "reloads": {"ok": 0, "failed": 0, "last_result": None},
        "audit": {"transport": "tls", "queued": 0, "sent": 3, "dropped": 0, "connected": True},
        "device": {"ip": "198.18.0.10", "identity_subject": "CN=ct"},
        "connections": {"active": 0, "total": 0},
    }
    base.update(kw)
    return base


def test_health_levels():
    now = 1_800_000_000.0
    assert health.evaluate(_status())[0] == health.OK
    assert health.evaluate(_status(ready=False))[0] == health.CRITICAL
    assert health.evaluate(_status(draining=True))[0] == health.CRITICAL
    unsync = {"synchronized": False, "detail": "STA_UNSYNC", "require_sync": True}
    assert health.evaluate(_status(clock=unsync))[0] == health.CRITICAL
    assert health.evaluate(_status(clock={**unsync, "require_sync": False}))[0] == health.WARNING
    soon = [{"path": "/d.crt", "role": "identity", "subject": "CN=ct", "not_after": now + 3600}]
    level, problems = health.evaluate(_status(certificates=soon))
    assert level == health.CRITICAL and "expires in 1h00m" in problems[0][1]
    soon[0]["not_after"] = now + 5 * 86400
    assert health.evaluate(_status(certificates=soon))[0] == health.WARNING
    gone = [{"path": "/d.crt", "role": "identity", "subject": "CN=ct", "not_after": now - 10}]
    assert health.evaluate(_status(certificates=gone))[0] == health.CRITICAL
    failed = {"ok": 1, "failed": 1, "last_result": "failed", "last_error": "bad key"}
    level, problems = health.evaluate(_status(reloads=failed))
    assert level == health.WARNING and "bad key" in problems[0][1]
    peer = {
        "name": "pacs",
        "direction": "outbound",
        "last_success": now - 100,
        "last_failure": now - 10,
        "last_failure_reason": "unknown_ca",
    }
    level, problems = health.evaluate(_status(peers=[peer]))
    assert level == health.WARNING and "unknown_ca" in problems[0][1]


def test_health_render_mentions_everything():
    text = health.render(_status())
    for needle in (
        "medtls: OK",
        "198.18.0.10",
        "CN=ct",
        "synchronised",
        "listeners:",
        "0.0.0.0:15001",
        "certificates:",
        "expires in 90d",
    ):
        assert needle in text, needle


# ------------------------------------------------------------------ control socket


def test_control_roundtrip_and_errors(tmp_path):
    path = str(tmp_path / "run" / "control.sock")
    server = control.ControlServer(
        path, {"status": lambda req: {"ok": True, "x": 1}, "boom": lambda req: 1 / 0}
    )
    server.start()
    try:
        assert oct(os.stat(path).st_mode & 0o777) == "0o660"
        assert control.request(path, "status") == {"ok": True, "x": 1}
        reply = control.request(path, "nope")
        assert not reply["ok"] and "unknown command 'nope'" in reply["error"]
        reply = control.request(path, "boom")
        assert not reply["ok"] and "boom failed: division by zero" in reply["error"]
    finally:
        server.stop()
    with pytest.raises(control.ControlError, match="cannot reach the medtls daemon"):
        control.request(path, "status")


# ------------------------------------------------------------------ connection log line


def test_connection_line_is_key_value():
    from medtls.core.events import ConnInfo

    conn = ConnInfo(7, "outbound", "pacs", ("198.18.0.10", 40000), ("198.18.0.20", 104), 0.0)
    line = connlog.connection_line(
        conn, 104, "CN=pacs,O=Hospital A", "TLSv1.3", "TLS_AES_256", 10, 20, 1.5, "ok"
    )
    assert line.startswith("event=connection id=7 direction=outbound route=pacs ")
    assert 'peer="CN=pacs,O=Hospital A"' in line
    assert "bytes_device_to_lan=10 bytes_lan_to_device=20 duration=1.500 result=ok" in line
    assert "opened=1970-01-01T00:00:00.000Z" in line


# ------------------------------------------------------------------ file watcher


def test_file_watcher_waits_until_files_settle():
    from medtls.ops.filewatch import FileWatcher

    stamps = {"/c.crt": (1, 10, 1), "/c.key": (1, 5, 2)}
    w = FileWatcher(lambda: list(stamps), stat=stamps.get)
    assert w.check() == []
    stamps["/c.key"] = (2, 5, 3)  # key written, certificate not yet
    assert w.check() == []
    stamps["/c.crt"] = (2, 11, 4)
    assert w.check() == []  # still moving
    assert w.check() == ["/c.crt", "/c.key"]  # settled: one reload for both
    assert w.check() == []
    stamps["/c.crt"] = None  # deleted
    w.check()
    assert w.check() == ["/c.crt"]
    stamps["/c.crt"] = (3, 1, 5)
    w.check()
    w.rebase()  # a reload happened meanwhile
    assert w.check() == []


# ------------------------------------------------------------------ local syslog transport


def test_local_transport_sends_rfc5424_datagrams(tmp_path):
    from medtls.config.ops import AuditConfig
    from medtls.ops.auditing import Auditor

    path = str(tmp_path / "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(3)
    auditor = Auditor(AuditConfig(transport="local", local_socket=path, source_id="box1"))
    auditor.start()
    try:
        auditor.application(started=True)
        data = rx.recv(65536).decode()
    finally:
        auditor.stop(0.5)
        rx.close()
    header, _, xml = data.partition("\ufeff")
    assert header.split(" ")[0] == "<85>1"
    assert header.split(" ")[2:6] == ["box1", "medtls", str(os.getpid()), "DICOM+RFC3881"]
    assert validate_event(xml) == []
