"""OpsRuntime as an observer, without a daemon process: clock gate, status, notify, metrics."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

from medtls.config.ops import AuditConfig, ClockConfig, ControlConfig, MetricsConfig, OpsConfig
from medtls.core.events import ConnInfo
from medtls.ops import health
from medtls.ops.clock import ClockState
from medtls.ops.runtime import OpsRuntime

from . import promparse


def _runtime(tmp_path, ops_pki, require_sync=True, synced=False, env=None):
    cert, key = ops_pki.issue("device", cn="ct-box")
    ops = OpsConfig(
        metrics=MetricsConfig(enabled=False),
        audit=AuditConfig(transport="none"),
        clock=ClockConfig(require_sync=require_sync),
        control=ControlConfig(socket=str(tmp_path / "c.sock"), watch_files=False),
    )
    cfg = SimpleNamespace(
        path=str(tmp_path / "medtls.yaml"),
        device=SimpleNamespace(ip="198.18.0.10", mac="02:00:5e:10:00:10"),
        identity=SimpleNamespace(certificate=cert, key=key),
        trust_ca=ops_pki.path,
        trust_crl=None,
        outbound=[SimpleNamespace(name="pacs", verify=None)],
        inbound=[],
        ops=ops,
    )
    state = {"synced": synced}
    rt = OpsRuntime(
        cfg,
        env=env or {},
        start_servers=False,
        clock_reader=lambda: ClockState(state["synced"], "test", "test clock"),
    )
    rt.listener_ready("outbound", "outbound", ("0.0.0.0", 15001))
    return rt, state


def test_clock_gate_refuses_until_synchronised(tmp_path, ops_pki):
    rt, state = _runtime(tmp_path, ops_pki)
    rt.reload_ok(1)  # initial load = ready
    reason = rt.validation_gate()
    assert reason and "refusing certificate validation" in reason
    status = rt.status()
    level, problems = health.evaluate(status)
    assert level == health.CRITICAL
    assert any("clock not synchronised" in text for _, text in problems)
    fams = promparse.parse(rt.registry.render())
    assert promparse.value(fams, "medtls_certificate_validation_allowed") == 0
    assert promparse.value(fams, "medtls_clock_synchronized") == 0
    state["synced"] = True
    rt.refresh_clock()
    assert rt.validation_gate() is None
    assert health.evaluate(rt.status())[0] == health.OK
    fams = promparse.parse(rt.registry.render())
    assert promparse.value(fams, "medtls_certificate_validation_allowed") == 1


def test_clock_gate_can_be_disabled(tmp_path, ops_pki):
    rt, _ = _runtime(tmp_path, ops_pki, require_sync=False)
    rt.reload_ok(1)
    assert rt.validation_gate() is None
    assert health.evaluate(rt.status())[0] == health.WARNING


def test_ready_status_line_and_peer_tracking(tmp_path, ops_pki):
    path = str(tmp_path / "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(2)
    try:
        rt, _ = _runtime(tmp_path, ops_pki, synced=True, env={"NOTIFY_SOCKET": path})
        rt.reload_ok(1)
        assert rx.recv(4096).startswith(b"READY=1\nSTATUS=0 active connections")
        conn = ConnInfo(
            1, "outbound", "pacs", ("198.18.0.10", 4000), ("198.18.0.20", 104), time.time()
        )
        rt.connection_opened(conn)
        rt.tls_established(conn, "TLSv1.3", "TLS_AES_128_GCM_SHA256", "CN=pacs")
        rt.tick()
        assert rx.recv(4096) == b"STATUS=1 active connections, 1 total, generation 1"
        fams = promparse.parse(rt.registry.render())
        assert (
            promparse.value(fams, "medtls_connections_active", direction="outbound", peer="pacs")
            == 1
        )
        assert (
            promparse.value(
                fams,
                "medtls_tls_connections_active",
                version="TLSv1.3",
                cipher="TLS_AES_128_GCM_SHA256",
            )
            == 1
        )
        rt.connection_closed(conn, 10, 20, 0.2, "ok")
        fams = promparse.parse(rt.registry.render())
        assert (
            promparse.value(
                fams,
                "medtls_tls_connections_active",
                version="TLSv1.3",
                cipher="TLS_AES_128_GCM_SHA256",
            )
            == 0
        )
        assert (
            promparse.value(
                fams,
                "medtls_bytes_total",
                direction="outbound",
                peer="pacs",
                stream="device_to_lan",
            )
            == 10
        )
        peer = next(p for p in rt.status()["peers"] if p["name"] == "pacs")
        assert peer["last_success_identity"] == "CN=pacs" and peer["active"] == 0
        rt.stopping()
        assert rx.recv(4096).startswith(b"STOPPING=1")
        assert health.evaluate(rt.status())[0] == health.CRITICAL
    finally:
        rx.close()
