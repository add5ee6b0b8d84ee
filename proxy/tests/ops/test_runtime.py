"""OpsRuntime as an observer, without a daemon process: clock gate, status, notify, metrics."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest
from medtls.config.ops import AuditConfig, ClockConfig, ControlConfig, MetricsConfig, OpsConfig
from medtls.core.certinfo import CertInfo
from medtls.core.events import DIRECTIONS, FAILURE_REASONS, RESULTS, ConnInfo
from medtls.core.handle import EngineHandle
from medtls.ops import health
from medtls.ops.clock import ClockState
from medtls.ops.runtime import OpsRuntime

from . import promparse


def _runtime(tmp_path, fresh_pki, require_sync=True, synced=False, env=None, watch_files=False):
    cert, key = fresh_pki.issue("device", cn="ct-box")
    ops = OpsConfig(
        metrics=MetricsConfig(enabled=False),
        audit=AuditConfig(transport="none"),
        clock=ClockConfig(require_sync=require_sync),
        control=ControlConfig(socket=str(tmp_path / "c.sock"), watch_files=watch_files),
    )
    cfg = SimpleNamespace(
        path=str(tmp_path / "medtls.yaml"),
        device=SimpleNamespace(ip="198.18.0.10", mac="02:00:5e:10:00:10"),
        identity=SimpleNamespace(certificate=cert, key=key),
        trust_ca=fresh_pki.ca,
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


def test_clock_gate_refuses_until_synchronised(tmp_path, fresh_pki):
    rt, state = _runtime(tmp_path, fresh_pki)
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


def test_clock_gate_can_be_disabled(tmp_path, fresh_pki):
    rt, _ = _runtime(tmp_path, fresh_pki, require_sync=False)
    rt.reload_ok(1)
    assert rt.validation_gate() is None
    assert health.evaluate(rt.status())[0] == health.WARNING


def test_ready_status_line_and_peer_tracking(tmp_path, fresh_pki):
    path = str(tmp_path / "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(2)
    try:
        rt, _ = _runtime(tmp_path, fresh_pki, synced=True, env={"NOTIFY_SOCKET": path})
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


class FakeEngine(EngineHandle):
    """An engine as ops sees it: reload() fires the events on the caller's thread."""

    def __init__(self, config, infos, fail=""):
        self._config, self.infos, self.fail = config, infos, fail
        self.observers, self.reloads, self.generation = [], 0, 1

    @property
    def config(self):
        return self._config

    def add_observer(self, observer):
        self.observers.append(observer)

    def call_soon(self, fn, *args):
        fn(*args)

    def certificates(self):
        return list(self.infos)

    def snapshot(self):
        return {"generation": self.generation}

    def reload(self):
        self.reloads += 1
        for obs in self.observers:
            obs.reloading()
        if self.fail:
            for obs in self.observers:
                obs.reload_failed(self.fail)
            return False
        self.generation += 1
        for obs in self.observers:
            obs.reload_ok(self.generation)
        return True


def _info(role, key, path, subject, fingerprint, not_after=2e9):
    return CertInfo(role, key, str(path), subject, not_after, fingerprint)


def test_certificates_come_from_the_engine_once_per_file(tmp_path, fresh_pki):
    base, _ = _runtime(tmp_path, fresh_pki, synced=True)
    infos = [
        _info("identity", "identity.certificate", "/x/id.pem", "CN=box", "aa"),
        _info("ca", "trust.ca", "/x/ca.pem", "CN=ca", "bb"),
        _info("peer-ca", "outbound[0].verify.ca", "/x/peer.pem", "CN=p1", "cc"),
        _info("peer-ca", "outbound[0].verify.ca", "/x/peer.pem", "CN=p2", "dd"),  # a bundle
        _info("peer-ca", "inbound[0].ca", "/x/peer.pem", "CN=p1", "cc"),  # the same file again
    ]
    engine = FakeEngine(base.config, infos)
    rt = OpsRuntime(base.config, engine, env={}, start_servers=False)
    engine.add_observer(rt)
    rt.reload_ok(1)
    status = rt.status()
    assert [(c["role"], c["subject"]) for c in status["certificates"]] == [
        ("identity", "CN=box"), ("ca", "CN=ca"), ("peer-ca", "CN=p1"), ("peer-ca", "CN=p2"),
    ]  # fmt: skip
    assert status["device"]["identity_subject"] == "CN=box"
    assert status["device"]["identity_not_after"] == 2e9
    fams = promparse.parse(rt.registry.render())
    ca = {"role": "ca", "subject": "CN=ca", "path": "/x/ca.pem"}
    assert promparse.value(fams, "medtls_certificate_not_after_timestamp_seconds", **ca) == 2e9
    assert promparse.value(fams, "medtls_certificate_expiry_seconds", **ca) == pytest.approx(
        2e9 - time.time(), abs=5
    )  # deprecated name, kept one release
    # a reload takes the new generation's list from the engine; no file is read for it
    engine.infos = [_info("identity", "identity.certificate", "/x/id.pem", "CN=box2", "ee")]
    assert rt._cmd_reload({}) == {"ok": True, "generation": 2}
    assert [c["subject"] for c in rt.status()["certificates"]] == ["CN=box2"]
    assert rt.status()["snapshot"] == {"generation": 2}


def test_control_reload_calls_the_engine_and_answers_its_outcome(tmp_path, fresh_pki):
    base, _ = _runtime(tmp_path, fresh_pki, synced=True)
    engine = FakeEngine(base.config, [], fail="medtls.yaml: bad key")
    rt = OpsRuntime(base.config, engine, env={}, start_servers=False)
    engine.add_observer(rt)
    rt.reload_ok(1)
    reply = rt._cmd_reload({})
    assert reply == {"ok": False, "error": "medtls.yaml: bad key", "generation": 1}
    assert engine.reloads == 1 and rt.reloads["failed"] == 1
    no_engine, _ = _runtime(tmp_path, fresh_pki, synced=True)
    assert no_engine._cmd_reload({})["ok"] is False


def test_changed_files_reload_through_the_engine(tmp_path, fresh_pki):
    base, _ = _runtime(tmp_path, fresh_pki, synced=True, watch_files=True)
    engine = FakeEngine(base.config, [])
    rt = OpsRuntime(base.config, engine, env={}, start_servers=False)
    engine.add_observer(rt)
    rt.reload_ok(1)
    rt.tick()
    assert engine.reloads == 0
    with open(base.config.identity.certificate, "ab") as fh:
        fh.write(b"\n")
    for _ in range(2):  # a change counts once it has settled for one check
        rt._last_file_check = 0.0
        rt.tick()
    assert engine.reloads == 1 and rt.generation == 2


def test_the_engine_has_every_method_of_the_handle():
    from medtls.engine.daemon import Daemon

    wanted = [n for n, v in vars(EngineHandle).items() if not n.startswith("_") and v is not None]
    assert [n for n in wanted if not hasattr(Daemon, n)] == []


def test_failure_counters_and_handshake_histogram_exist_at_zero_before_any_traffic(
    tmp_path, fresh_pki
):
    rt, _ = _runtime(tmp_path, fresh_pki, synced=True)
    fams = promparse.parse(rt.registry.render())
    for direction in DIRECTIONS:
        for reason in FAILURE_REASONS:
            labels = {"direction": direction, "reason": reason}
            assert promparse.value(fams, "medtls_handshake_failures_total", **labels) == 0
        assert (
            promparse.value(fams, "medtls_handshake_duration_seconds_count", direction=direction)
            == 0
        )
    for result in RESULTS:  # each configured route, in its direction
        labels = {"direction": "outbound", "peer": "pacs", "result": result}
        assert promparse.value(fams, "medtls_connections_total", **labels) == 0
    # bounded: one series per reason and direction, none per peer or client
    assert len(fams["medtls_handshake_failures_total"]["samples"]) == 2 * len(FAILURE_REASONS)


def test_one_handshake_is_observed_once_from_accept_to_established(tmp_path, fresh_pki):
    rt, _ = _runtime(tmp_path, fresh_pki, synced=True)
    rt.reload_ok(1)
    conn = ConnInfo(1, "inbound", "", ("198.18.0.30", 4000), ("198.18.0.10", 2762), time.time())
    rt.connection_opened(conn)
    time.sleep(0.03)
    rt.tls_established(conn, "TLSv1.3", "TLS_AES_128_GCM_SHA256", "CN=his")
    rt.connection_closed(conn, 10, 20, 0.05, "ok")
    fams = promparse.parse(rt.registry.render())
    inbound = {"direction": "inbound"}
    assert promparse.value(fams, "medtls_handshake_duration_seconds_count", **inbound) == 1
    took = promparse.value(fams, "medtls_handshake_duration_seconds_sum", **inbound)
    assert 0.03 <= took < 1
    bucket = "medtls_handshake_duration_seconds_bucket"
    assert promparse.value(fams, bucket, le="0.025", **inbound) == 0
    assert promparse.value(fams, bucket, le="0.05", **inbound) == 1
    assert (
        promparse.value(fams, "medtls_handshake_duration_seconds_count", direction="outbound") == 0
    )


def test_crl_times_are_their_own_metrics(tmp_path, fresh_pki):
    base, _ = _runtime(tmp_path, fresh_pki, synced=True)
    crl = CertInfo("crl", "trust.crl", "/x/crl.pem", "CN=ca", 2e9, "ff", 1.9e9)
    engine = FakeEngine(base.config, [crl])
    rt = OpsRuntime(base.config, engine, env={}, start_servers=False)
    engine.add_observer(rt)
    rt.reload_ok(1)
    fams = promparse.parse(rt.registry.render())
    labels = {"issuer": "CN=ca", "path": "/x/crl.pem"}
    assert promparse.value(fams, "medtls_crl_next_update_timestamp_seconds", **labels) == 2e9
    assert promparse.value(fams, "medtls_crl_this_update_timestamp_seconds", **labels) == 1.9e9
    assert promparse.total(fams, "medtls_certificate_not_after_timestamp_seconds") == 0
