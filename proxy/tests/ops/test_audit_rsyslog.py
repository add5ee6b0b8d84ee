"""The audit trail reaches a real RFC 5425 receiver (rsyslogd + gnutls, mutual TLS) intact,
including what was queued while the receiver was down, and every message is a valid
DICOM PS3.15 A.5 audit message."""

from __future__ import annotations

import time
from types import SimpleNamespace

from medtls.config.ops import (
    AuditConfig,
    ClockConfig,
    ControlConfig,
    LogForwardConfig,
    MetricsConfig,
    OpsConfig,
)
from medtls.core.events import ConnInfo
from medtls.ops.runtime import OpsRuntime

from .atna import summary, validate_event


def _config(tmp_path, pki, port, spool="off"):
    dev_crt, dev_key = pki.issue("device", cn="ct-box-1")
    return SimpleNamespace(
        path=str(tmp_path / "medtls.yaml"),
        device=SimpleNamespace(ip="198.18.0.10", mac=None),
        identity=SimpleNamespace(certificate=dev_crt, key=dev_key),
        trust_ca=pki.ca,
        trust_crl=None,
        outbound=[SimpleNamespace(name="pacs", verify=None)],
        inbound=[SimpleNamespace(name="dicom", device_port=104, ca=None)],
        logging=SimpleNamespace(level="info", syslog=LogForwardConfig()),
        ops=OpsConfig(
            metrics=MetricsConfig(enabled=False),
            audit=AuditConfig(
                transport="tls",
                host="127.0.0.1",
                port=port,
                ca=str(pki.ca),
                certificate=str(dev_crt),
                key=str(dev_key),
                server_name="127.0.0.1",
                retry_interval=0.1,
                source_id="ct-box-1",
                site_id="Radiology",
                spool=spool,
            ),
            clock=ClockConfig(require_sync=False),
            control=ControlConfig(socket=str(tmp_path / "control.sock"), watch_files=False),
        ),
    )


def _connection(rt, conn_id, ok):
    conn = ConnInfo(
        conn_id,
        "inbound",
        "dicom",
        ("198.18.0.20", 50000 + conn_id),
        ("198.18.0.10", 2762),
        time.time(),
    )
    rt.connection_opened(conn)
    if ok:
        rt.tls_established(conn, "TLSv1.3", "TLS_AES_256_GCM_SHA384", "CN=pacs")
        rt.connection_closed(conn, 100, 200, 0.5, "ok")
    else:
        rt.handshake_failed(conn, "unknown_ca", "certificate verify failed")
        rt.connection_closed(conn, 0, 0, 0.1, "unknown_ca")


def test_audit_over_tls_to_rsyslog_with_outage(tmp_path, fresh_pki, rsyslog_factory):
    pki = fresh_pki
    server_crt, server_key = pki.issue("arr", ips=("127.0.0.1",))
    receiver = rsyslog_factory(pki.ca, server_crt, server_key)
    rt = OpsRuntime(_config(tmp_path, pki, receiver.port), env={}, start_servers=False)
    rt.start()
    try:
        # receiver down: everything is queued, nothing lost
        rt.ready()
        _connection(rt, 1, ok=True)
        _connection(rt, 2, ok=False)
        time.sleep(0.3)
        assert (rt.auditor.sender.queued(), rt.auditor.sender.sent, rt.auditor.sender.dropped) == (
            3,
            0,
            0,
        )

        receiver.start()
        assert len(receiver.wait_for(3)) == 3

        # receiver restarts; messages produced meanwhile arrive after it is back
        receiver.stop()
        rt.reload_failed("identity.certificate: key does not match certificate")
        _connection(rt, 3, ok=False)
        time.sleep(0.3)
        receiver.start()
        assert len(receiver.wait_for(5)) == 5
    finally:
        rt.close()  # Application Stop, flushed before close returns
    records = receiver.wait_for(6)
    assert rt.auditor.sender.dropped == 0

    events = []
    for rec in records:
        assert rec["protocol-version"] == "1"
        assert rec["msgid"] == "DICOM+RFC3881"
        assert rec["app-name"] == "medtls"
        assert rec["hostname"] == "ct-box-1"
        assert rec["pri"] in ("84", "85")
        assert validate_event(rec["msg"]) == [], rec["msg"]
        s = summary(rec["msg"])
        events.append((s["event"], tuple(s["types"]), s["outcome"]))
    assert events == [
        ("110100", ("110120",), "0"),  # Application Start
        ("110113", ("110126",), "0"),  # Node Authentication success
        ("110113", ("110126",), "4"),  # Node Authentication failure
        ("110113", ("110129",), "4"),  # security configuration change rejected
        ("110113", ("110126",), "4"),
        ("110100", ("110121",), "0"),  # Application Stop
    ]
    failure = summary(records[2]["msg"])
    assert "unknown_ca" in failure["details"]["Alert Description"]
    assert failure["objects"] == ["198.18.0.20"]


def test_audit_queued_at_stop_reaches_rsyslog_after_the_restart(
    tmp_path, fresh_pki, rsyslog_factory
):
    pki = fresh_pki
    server_crt, server_key = pki.issue("arr", ips=("127.0.0.1",))
    receiver = rsyslog_factory(pki.ca, server_crt, server_key)
    spool = str(tmp_path / "audit.spool")
    first = OpsRuntime(_config(tmp_path, pki, receiver.port, spool), env={}, start_servers=False)
    first.start()
    first.ready()
    _connection(first, 1, ok=True)
    _connection(first, 2, ok=False)
    first.close()  # the repository is down: Start, two authentications and Stop are spooled

    receiver.start()
    second = OpsRuntime(_config(tmp_path, pki, receiver.port, spool), env={}, start_servers=False)
    second.start()
    try:
        second.ready()
        records = receiver.wait_for(5)
    finally:
        second.close()
    events = [(summary(r["msg"])["event"], tuple(summary(r["msg"])["types"])) for r in records]
    assert events == [
        ("110100", ("110120",)),  # first run: Application Start
        ("110113", ("110126",)),  # node authentication success, failure
        ("110113", ("110126",)),
        ("110100", ("110121",)),  # first run: Application Stop
        ("110100", ("110120",)),  # second run: Application Start
    ]
    assert all(validate_event(r["msg"]) == [] for r in records)
