"""Status that tells the truth about inbound ports (issue 19): a client that passes TLS but whose
device cannot be reached is one failure, attributed to the device leg, and `medtls status`
flags it; a refused client does not."""

from __future__ import annotations

import contextlib
import ssl

from conftest import free_port

from .harness import Box, close_cleanly, wait_until


def _svc(box: Box) -> dict:
    _rc, status = box.status_json()
    return next(p for p in status["peers"] if p["name"] == "svc")


def test_a_dead_device_behind_an_inbound_port_is_one_failure_and_a_warning(tmp_path, fresh_pki):
    box = Box(tmp_path, fresh_pki, free_port())  # nothing listens on the device port
    try:
        with contextlib.suppress(OSError, ssl.SSLError), box.connect() as s:
            s.sendall(b"x")
            s.recv(10)
        box.wait_conn("connect_failed", "route=svc")
        svc = wait_until(lambda: (p := _svc(box))["last_failure"] and p, what="the failure")
        assert svc["last_failure_reason"] == "connect_failed"
        assert svc["last_success"] is None, "a peer success recorded for a failed connection"
        r = box.cli("status")
        assert r.returncode == 1, r.stdout  # WARNING
        assert "inbound svc: the device did not answer (connect_failed)" in r.stdout, r.stdout
    finally:
        box.stop()


def test_a_served_client_is_a_success_and_a_refused_one_no_warning(
    tmp_path, fresh_pki, echo_server
):
    box = Box(tmp_path, fresh_pki, echo_server.port)
    try:
        with box.connect() as s:
            s.sendall(b"hello")
            assert s.recv(10) == b"hello"
            close_cleanly(s)
        box.wait_conn("ok", "route=svc")
        svc = wait_until(lambda: (p := _svc(box))["last_success"] and p, what="the success")
        assert "pacs" in svc["last_success_identity"]
        rogue = ssl.create_default_context(cafile=str(fresh_pki.ca))
        rogue.check_hostname = False
        rogue.load_cert_chain(fresh_pki.crt("ris"), fresh_pki.key("ris"))  # not allowed
        with contextlib.suppress(OSError, ssl.SSLError), box.connect(rogue) as s:
            s.recv(10)
        box.wait_conn("acl_denied", "route=svc")
        assert box.cli("status").returncode == 0  # a knocking stranger is not the box's fault
    finally:
        box.stop()
