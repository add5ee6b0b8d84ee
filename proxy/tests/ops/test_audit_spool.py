"""Audit messages still queued when the daemon stops survive the restart: they are spooled to a
file at stop and sent first by the next start; nothing is lost without an error naming it."""

from __future__ import annotations

import logging
import os
import socket

import pytest
from medtls.config.ops import AuditConfig, parse_ops_sections
from medtls.ops import audit_xml, auditspool
from medtls.ops.auditing import Auditor

from .atna import summary


def _auditor(tmp_path, spool="", environ=None, queue_size=10000):
    cfg = AuditConfig(
        transport="local",
        local_socket=str(tmp_path / "log.sock"),
        retry_interval=0.05,
        source_id="ct-box-1",
        spool=spool,
        queue_size=queue_size,
    )
    return Auditor(cfg, "198.18.0.10", environ={} if environ is None else environ)


def _authentications(auditor, first, count):
    for i in range(first, first + count):
        auditor.node_authentication(
            True, peer_address=f"198.18.0.{i}", peer_identity="CN=pacs", direction="inbound"
        )


def _receiver(tmp_path):
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(tmp_path / "log.sock"))
    rx.settimeout(5)
    return rx


def _peer_of(datagram: bytes) -> str:
    xml = datagram.decode().split("\ufeff", 1)[1]
    return summary(xml)["objects"][0]


def test_queued_messages_survive_a_restart_in_order(tmp_path, caplog):
    caplog.set_level(logging.INFO, "medtls.ops")
    spool = str(tmp_path / "audit.spool")
    first = _auditor(tmp_path, spool)
    first.start()
    _authentications(first, 1, 3)  # no syslog socket yet: all three wait in the queue
    first.stop(flush_timeout=0.2)
    assert os.stat(spool).st_mode & 0o777 == 0o600
    assert f"unreachable at stop: 3 messages kept in {spool}" in caplog.text

    rx = _receiver(tmp_path)
    second = _auditor(tmp_path, spool)
    second.start()
    try:
        _authentications(second, 4, 1)
        got = [_peer_of(rx.recv(65536)) for _ in range(4)]
    finally:
        second.stop(flush_timeout=1)
        rx.close()
    assert got == ["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"]
    assert not os.path.exists(spool)  # sent once, never again at a later start
    assert f"3 messages of a previous run from {spool} queued first" in caplog.text


def test_without_a_spool_the_loss_is_an_error_that_counts_it(tmp_path, caplog):
    a = _auditor(tmp_path, spool="off", environ={"STATE_DIRECTORY": str(tmp_path)})
    a.start()
    _authentications(a, 1, 2)
    a.stop(flush_timeout=0.2)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"audit: 2 messages for {tmp_path}/log.sock lost at stop: the repository was "
        "unreachable and audit.spool is off"
    ]
    assert not os.path.exists(tmp_path / "audit.spool")


def test_an_unwritable_spool_is_an_error_naming_the_file(tmp_path, caplog):
    spool = str(tmp_path / "missing-dir" / "audit.spool")
    a = _auditor(tmp_path, spool)
    a.start()
    _authentications(a, 1, 1)
    a.stop(flush_timeout=0.2)
    assert (
        f"audit: 1 messages for {tmp_path}/log.sock lost at stop: cannot write audit.spool "
        f"{spool}: No such file or directory"
    ) in caplog.text


def test_spool_defaults_to_the_systemd_state_directory(tmp_path):
    assert _auditor(tmp_path, environ={"STATE_DIRECTORY": f"{tmp_path}:/x"}).spool == str(
        tmp_path / "audit.spool"
    )
    assert _auditor(tmp_path, environ={}).spool == ""
    assert _auditor(tmp_path, spool="off", environ={"STATE_DIRECTORY": "/x"}).spool == ""


def test_a_spool_larger_than_the_queue_keeps_the_newest(tmp_path, caplog):
    caplog.set_level(logging.INFO, "medtls.ops")
    spool = tmp_path / "audit.spool"
    spool.write_bytes(auditspool.encode([b"old%d" % i for i in range(5)]))
    a = _auditor(tmp_path, str(spool), queue_size=3)
    a.start()
    try:
        assert a.sender.queued() == 3 and a.sender.dropped == 2
        assert a.sender.take_queued() == [b"old2", b"old3", b"old4"]
    finally:
        a.stop(flush_timeout=0.1)
    assert "2 oldest dropped (audit.queue_size)" in caplog.text


def test_a_damaged_spool_gives_its_intact_messages_and_is_set_aside(tmp_path):
    spool = tmp_path / "audit.spool"
    good = auditspool.encode([b"one", b"two"])
    spool.write_bytes(good + b"99 truncated")
    messages, problem = auditspool.take(str(spool))
    assert messages == [b"one", b"two"]
    assert problem == (
        f"{spool}: damaged at byte {len(good)} of {len(good) + 12} after 2 messages; "
        f"kept as {spool}.damaged"
    )
    assert not spool.exists() and (tmp_path / "audit.spool.damaged").exists()
    assert auditspool.take(str(spool)) == ([], "")  # and is not read again


@pytest.mark.parametrize(
    ("data", "messages", "bad"),
    [
        (b"", [], None),
        (b"3 abc5 hello", [b"abc", b"hello"], None),
        (b"3 abc\n", [b"abc"], 5),
        (b"03 abc", [], 0),
        (b"x", [], 0),
        (b"3 ab", [], 0),
        (b"2000000 " + b"a" * 10, [], 0),
    ],
)
def test_decode(data, messages, bad):
    assert auditspool.decode(data) == (messages, bad)


def test_round_trip_keeps_real_messages_byte_for_byte(tmp_path):
    source = audit_xml.Source(audit_source_id="ct-box-1", site_id="", node_address="198.18.0.10")
    msgs = [audit_xml.application_activity(source, started=True).encode(), b"\xff\x00 x 1 "]
    auditspool.save(str(tmp_path / "s"), msgs)
    assert auditspool.take(str(tmp_path / "s")) == (msgs, "")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("off", None),
        ("/var/lib/medtls/audit.spool", None),
        ("audit.spool", "must be an absolute file path or off, got 'audit.spool'"),
        ("/var/lib/medtls/", "must be an absolute file path or off, got '/var/lib/medtls/'"),
    ],
)
def test_spool_config(value, error):
    ops, errors = parse_ops_sections({"audit": {"spool": value}})
    if error is None:
        assert errors == [] and ops.audit.spool == value
    else:
        assert errors == [("audit.spool", error)]


def test_each_worker_has_its_own_spool_and_the_first_adopts_the_orphans(tmp_path):
    base = str(tmp_path / "audit.spool")
    for name in ("audit.spool", "audit.spool.1", "audit.spool.3", "audit.spool.x", "other.3"):
        (tmp_path / name).write_bytes(b"")
    own, adopt = auditspool.layout(base, (0, 2))
    assert own == f"{base}.0" and adopt() == [base, f"{base}.3"]  # a single process's, worker 3's
    own, adopt = auditspool.layout(base, (1, 2))
    assert own == f"{base}.1" and adopt() == []
    own, adopt = auditspool.layout(base, None)  # back to one process: every worker's file
    assert own == base and adopt() == [f"{base}.1", f"{base}.3"]
    assert auditspool.layout("", (0, 2))[0] == ""
