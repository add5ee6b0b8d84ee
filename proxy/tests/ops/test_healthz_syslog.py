"""A box read from the management network: /healthz beside /metrics, and the operational log
forwarded to the site's syslog server (logging.syslog)."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request

from conftest import echo_once, free_port

from .harness import close_cleanly, wait_until

RFC5424 = re.compile(
    r"^<(?P<pri>\d+)>1 (?P<ts>\S+) (?P<host>\S+) medtls (?P<pid>\d+) (?P<msgid>\S+) - "
    r"\ufeff(?P<msg>.*)$",
    re.S,
)


def healthz(box) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{box.metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.headers["Content-Type"] == "application/json"
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers["Content-Type"] == "application/json"
        return exc.code, json.loads(exc.read())


def test_healthz_is_200_for_a_healthy_box(box_factory):
    box = box_factory()
    code, body = healthz(box)
    assert code == 200
    assert body == {"health": "OK", "state": "healthy", "reason": "serving", "reasons": []}
    assert "medtls_ready 1" in box.scrape()  # /metrics is still there, same address


def test_healthz_is_503_with_the_reason_when_tls_is_refused(box_factory):
    box = box_factory(extra={"clock": {"require_sync": True, "not_before": "2100-01-01"}})
    code, body = healthz(box)
    assert code == 503
    assert body["health"] == "CRITICAL"
    assert body["state"] == "clock_unsynced"
    assert any(
        r["level"] == "CRITICAL" and "clock not synchronised" in r["problem"]
        for r in body["reasons"]
    ), body


def _udp_receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    return sock


def _datagrams(sock, until, timeout=10.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(until in g for g in got):
        try:
            got.append(sock.recv(65536).decode())
        except TimeoutError:
            continue
    return got


def test_connection_lines_reach_a_udp_syslog_server(box_factory):
    receiver = _udp_receiver()
    port = receiver.getsockname()[1]
    try:
        box = box_factory(
            extra={
                "logging": {
                    "level": "info",
                    "syslog": {"transport": "udp", "host": "127.0.0.1", "port": port},
                },
                "audit": {"transport": "none", "source_id": "ct-box-1"},
            }
        )
        with box.connect() as s:
            assert echo_once(s, b"x") == b"x"
            close_cleanly(s)
        got = _datagrams(receiver, "event=connection")
    finally:
        receiver.close()
    lines = [m for m in map(RFC5424.match, got) if m]
    assert len(lines) == len(got), got  # every datagram is one RFC 5424 message
    conn = next(m for m in lines if "event=connection" in m["msg"])
    assert conn["pri"] == "30"  # facility daemon (3), severity info (6)
    assert conn["host"] == "ct-box-1"
    assert conn["msgid"] == "medtls.conn"
    assert "direction=inbound route=svc" in conn["msg"] and "result=ok" in conn["msg"]
    assert any("ready: 1 listeners" in m["msg"] for m in lines), got


def test_tcp_server_gets_octet_counted_frames(box_factory):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        box = box_factory(
            extra={
                "logging": {
                    "level": "info",
                    "syslog": {"transport": "tcp", "host": "127.0.0.1", "port": port},
                }
            }
        )
        server.settimeout(10)
        peer, _ = server.accept()
        with box.connect() as s:
            assert echo_once(s, b"x") == b"x"
            close_cleanly(s)
        data = b""
        peer.settimeout(0.5)
        deadline = time.monotonic() + 10
        while b"event=connection" not in data and time.monotonic() < deadline:
            try:
                data += peer.recv(65536)
            except TimeoutError:
                continue
        peer.close()
    finally:
        server.close()
    frames = []
    while data:
        length, _, rest = data.partition(b" ")
        frames.append(rest[: int(length)].decode())
        data = rest[int(length) :]
    assert frames and all(RFC5424.match(f) for f in frames), frames
    assert any("event=connection" in f and "result=ok" in f for f in frames), frames


def test_unreachable_server_never_slows_the_relay_and_drops_are_counted(box_factory):
    dead = free_port()  # nothing listens: every connect is refused
    box = box_factory(
        extra={
            "logging": {
                "level": "info",
                "syslog": {
                    "transport": "tcp",
                    "host": "127.0.0.1",
                    "port": dead,
                    "queue_size": 3,
                    "retry_interval": 30,
                },
            }
        }
    )
    started = time.monotonic()
    for _ in range(6):
        with box.connect() as s:
            assert echo_once(s, b"x") == b"x"
            close_cleanly(s)
    assert time.monotonic() - started < 5
    st = wait_until(
        lambda: (lambda s: s if (s.get("log_forward") or {}).get("dropped") else None)(
            box.status_json()[1]
        ),
        what="dropped log messages in status",
    )
    forward = st["log_forward"]
    assert forward["destination"] == f"tcp://127.0.0.1:{dead}"
    assert forward["queued"] == 3 and forward["dropped"] >= 3 and not forward["connected"]
    r = box.cli("status")
    assert r.returncode == 1
    assert f"WARNING: log forwarding to tcp://127.0.0.1:{dead}:" in r.stdout
    assert "messages dropped (queue full)" in r.stdout
    assert box.log().count(f"logging.syslog tcp://127.0.0.1:{dead} unreachable") == 1
