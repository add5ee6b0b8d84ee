"""Daemon lifecycle: events, snapshot, reload (API and SIGHUP), SIGTERM drain."""

import contextlib
import dataclasses
import os
import signal
import socket
import ssl
import threading
import time

import pytest
from conftest import box_config, echo_once, free_port, write_yaml
from medtls.config.ops import AuditConfig, ClockConfig, ControlConfig, MetricsConfig, OpsConfig
from medtls.core import events as ev
from medtls.engine.daemon import Daemon
from medtls.ops.runtime import OpsRuntime


class Recorder(ev.Observer):
    def __init__(self):
        self.events = []

    def listener_ready(self, name, direction, address):
        self.events.append(("listener_ready", name, direction))

    def connection_opened(self, conn):
        self.events.append(("connection_opened", conn.direction, conn.route))

    def tls_established(self, conn, version, cipher, peer):
        self.events.append(("tls_established", version, cipher, peer))

    def handshake_failed(self, conn, reason, detail):
        self.events.append(("handshake_failed", reason))

    def connection_closed(self, conn, up, down, duration, result):
        self.events.append(("connection_closed", up, down, result))

    def reload_ok(self, generation):
        self.events.append(("reload_ok", generation))

    def reload_failed(self, error):
        self.events.append(("reload_failed", error))

    def stopping(self):
        self.events.append(("stopping",))

    def names(self):
        return [e[0] for e in self.events]


class TLSClient:
    def __init__(self, pki, port, cn):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(pki.ca)
        ctx.load_cert_chain(pki.crt(cn), pki.key(cn))
        self.s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))

    def echo(self, data=b"ping"):
        return echo_once(self.s, data)

    def close(self):
        # close_notify first: a bare close() ends the stream without it, which the box
        # reports as a truncation (result=truncated, plain side reset).
        with contextlib.suppress(OSError, ssl.SSLError):
            self.s.unwrap()
        self.s.close()


def try_echo(pki, port, cn):
    try:
        c = TLSClient(pki, port, cn)
        try:
            return c.echo()
        finally:
            c.close()
    except (OSError, ssl.SSLError):
        return b""


def inbound_config(pki, port, echo_port, allow=({"cn": "box-a"},), **over) -> dict:
    """box-b relaying TLS on `port` to the plain echo server, admitting `allow`."""
    return box_config(pki, "box-b", inbound=[{
        "name": "svc", "listen": f"127.0.0.1:{port}", "device_port": echo_port,
        "allow": list(allow)}], **over)  # fmt: skip


@pytest.fixture
def daemon_env(pki, tmp_path, echo_server):
    port = free_port()
    path = tmp_path / "medtls.yaml"

    def cfg(allow, **over):
        return write_yaml(path, inbound_config(pki, port, echo_server.port, allow, **over))

    cfg([{"cn": "box-a"}])
    rec = Recorder()
    d = Daemon(path, observers=[rec])
    t = threading.Thread(target=d.serve_forever, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while not d.listeners and time.monotonic() < deadline:
        time.sleep(0.02)
    yield d, rec, port, cfg
    d.stop()
    t.join(10)


def test_a_reload_before_the_loop_runs_waits_for_the_loop(pki, tmp_path, echo_server):
    """`medtls reload` may reach the control socket between attach() and serve_forever(): the
    reload then runs on the loop once it starts, never on the control thread beside start-up."""
    path = write_yaml(
        tmp_path / "medtls.yaml", inbound_config(pki, free_port(), echo_server.port, [{"cn": "a"}])
    )
    d = Daemon(path)
    ran_on = []
    reload_in_loop = d._reload_in_loop

    def traced():
        ran_on.append(threading.get_ident())
        return reload_in_loop()

    d._reload_in_loop = traced
    answers = []
    control = threading.Thread(target=lambda: answers.append(d.reload()))
    control.start()
    time.sleep(0.3)
    assert ran_on == []  # not beside start-up
    loop = threading.Thread(target=d.serve_forever, daemon=True)
    loop.start()
    control.join(10)
    assert answers == [True]
    assert ran_on == [loop.ident]
    d.stop()
    loop.join(10)


def wait_for(pred, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def _ops_observer(d, tmp_path) -> OpsRuntime:
    """The operations wing as it runs beside the engine: it keeps per-peer state itself, from
    the events (the engine keeps none)."""
    ops = OpsConfig(
        metrics=MetricsConfig(enabled=False),
        audit=AuditConfig(transport="none"),
        clock=ClockConfig(require_sync=False),
        control=ControlConfig(socket=str(tmp_path / "c.sock"), watch_files=False),
    )
    rt = OpsRuntime(dataclasses.replace(d.config, ops=ops), engine=d, start_servers=False)
    d.add_observer(rt)
    return rt


def test_events_and_snapshot(pki, daemon_env, tmp_path):
    d, rec, port, _ = daemon_env
    ops = _ops_observer(d, tmp_path)
    assert try_echo(pki, port, "box-a") == b"ping"
    assert wait_for(lambda: "connection_closed" in rec.names())
    assert rec.events[0] == ("listener_ready", "svc", "inbound")
    assert ("reload_ok", 1) in rec.events
    i = rec.names().index("connection_opened")
    assert rec.events[i] == ("connection_opened", "inbound", "svc")
    tls = rec.events[i + 1]
    assert tls[0] == "tls_established" and tls[1] == "TLSv1.3" and "CN=box-a" in tls[3]
    assert rec.events[i + 2] == ("connection_closed", 4, 4, "ok")

    snap = d.snapshot()
    assert snap["listeners"] == [
        {"name": "svc", "direction": "inbound", "address": f"127.0.0.1:{port}"}
    ]
    assert snap["connections"]["total"] == 0
    assert snap["generation"] == 1
    roles = {c["role"] for c in snap["certificates"]}
    assert {"identity.certificate", "trust.ca"} <= roles
    assert all(c["not_after"] for c in snap["certificates"])
    assert "peers" not in snap  # per-peer state is ops' (one fact in one place)
    peers = {p["name"]: p for p in ops.status()["peers"]}
    assert peers["svc"]["last_success"] > 0

    assert try_echo(pki, port, "his") == b""
    assert wait_for(lambda: ("handshake_failed", "acl_denied") in rec.events)
    peers = {p["name"]: p for p in ops.status()["peers"]}
    assert peers["svc"]["last_failure_reason"] == "acl_denied"


def test_active_connections_in_snapshot(pki, daemon_env):
    d, _, port, _ = daemon_env
    c = TLSClient(pki, port, "box-a")
    assert c.echo() == b"ping"
    snap = d.snapshot()
    assert snap["connections"]["by_direction"] == {"inbound": 1}
    assert snap["connections"]["by_route"] == {"inbound/svc": 1}
    c.close()


def test_reload_keeps_established_and_applies_new_policy(pki, daemon_env):
    d, rec, port, cfg = daemon_env
    old = TLSClient(pki, port, "box-a")
    assert old.echo() == b"ping"
    cfg([{"cn": "ris"}])  # box-a no longer allowed
    assert d.reload() is True
    assert ("reload_ok", 2) in rec.events
    assert old.echo(b"still here") == b"still here"  # established connection survives
    assert try_echo(pki, port, "box-a") == b""  # new connections use the new ACL
    assert try_echo(pki, port, "ris") == b"ping"
    old.close()


def test_bad_reload_keeps_running_config(pki, daemon_env, tmp_path, caplog):
    d, rec, port, cfg = daemon_env
    cfg([{"cn": "box-a"}], colour="blue")
    assert d.reload() is False
    assert rec.events[-1][0] == "reload_failed" and "colour: unknown key" in rec.events[-1][1]
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate")
    path = cfg([{"cn": "box-a"}])
    text = path.read_text().replace(str(pki.crt("box-b")), str(garbage))
    path.write_text(text)
    assert d.reload() is False
    assert "identity: cannot load" in rec.events[-1][1]
    assert d.snapshot()["generation"] == 1
    assert try_echo(pki, port, "box-a") == b"ping"  # old material still serves


def run_with_held_client(pki, run_medtls, echo_port, drain_timeout):
    """`medtls run` of inbound_config and one box-a client holding an echoing connection."""
    port = free_port()
    cfg = inbound_config(pki, port, echo_port)
    cfg["limits"]["drain_timeout"] = drain_timeout
    m = run_medtls(cfg, "b", [port])
    held = TLSClient(pki, port, "box-a")
    assert held.echo() == b"ping"
    return cfg, port, m, held


def test_sighup_reload_and_sigterm_drain(pki, run_medtls, echo_server):
    cfg, port, m, held = run_with_held_client(pki, run_medtls, echo_server.port, 20)

    cfg["inbound"][0]["allow"] = [{"cn": "ris"}]
    write_yaml(m.config, cfg)
    m.signal(signal.SIGHUP)
    m.wait_log("reload: configuration generation 2 active")
    assert try_echo(pki, port, "box-a") == b""
    cfg["bogus"] = 1
    write_yaml(m.config, cfg)
    m.signal(signal.SIGHUP)
    m.wait_log("reload rejected, keeping generation 2: ")
    assert try_echo(pki, port, "ris") == b"ping"

    m.signal(signal.SIGTERM)
    m.wait_log("stopping: listeners closed, draining")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert held.echo(b"during drain") == b"during drain"
    t0 = time.monotonic()
    held.close()
    m.proc.wait(10)
    assert m.proc.returncode == 0
    assert time.monotonic() - t0 < 5  # exits when the last connection ends, not at the timeout


def test_sigterm_drain_timeout_closes_remaining(pki, run_medtls, echo_server):
    _, _, m, held = run_with_held_client(pki, run_medtls, echo_server.port, 1)
    t0 = time.monotonic()
    m.signal(signal.SIGTERM)
    m.proc.wait(10)
    assert 0.8 < time.monotonic() - t0 < 5
    assert "result=shutdown" in m.log()
    # Cut: reset (read on the TCP socket itself; Python's TLS layer reports a reset as an EOF).
    raw = socket.socket(fileno=os.dup(held.s.fileno()))
    with pytest.raises(ConnectionResetError):
        raw.recv(10)
    raw.close()
    held.close()


def test_workers_share_the_listener(pki, run_medtls, echo_server):
    port = free_port()
    cfg = inbound_config(pki, port, echo_server.port, workers=2)
    m = run_medtls(cfg, "b", [port])
    for _ in range(20):
        assert try_echo(pki, port, "box-a") == b"ping"
    deadline = time.monotonic() + 10
    while m.log().count("result=ok") < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m.log().count("result=ok") == 20  # every connection relayed and logged once
    assert m.log().count("listening svc") == 2  # one listener per worker (SO_REUSEPORT)
    m.signal(signal.SIGTERM)
    m.proc.wait(10)
    assert m.proc.returncode == 0
