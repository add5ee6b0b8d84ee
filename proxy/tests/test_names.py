"""The protocol's own names in the trail (AE titles, MSH-3..6/MSH-9 in the connection line), the
binding of calling AE titles to certificate identities on an inbound DICOM port, and inbound
protocol-aware refusals (device unreachable: A-ASSOCIATE-RJ / ACK AE inside TLS). Asserted with
what pynetdicom and an MLLP client over TLS see."""

from __future__ import annotations

import contextlib
import socket
import ssl

import hl7 as python_hl7
import pytest
from conftest import box_config, free_port
from dicom_util import associate_seeing_rj
from medtls.core.dicom import associate_rq
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from test_refusals import dicom_route, hl7_message, server_ctx


def client_ctx(pki, cn: str = "box-a") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(pki.crt(cn), pki.key(cn))
    ctx.load_verify_locations(pki.ca)
    ctx.check_hostname = False
    return ctx


@contextlib.contextmanager
def closed_port():
    """A port nobody listens on for as long as the test runs: bound, never listening (a port
    from free_port() could be taken meanwhile by another test's server)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@contextlib.contextmanager
def dicom_device(ae_title: str = "CT01"):
    """A plain pynetdicom SCP (the device behind an inbound port)."""
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        yield port
    finally:
        server.shutdown()


def echo(port: int, calling: str, called: str, tls=None):
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 15
    assoc, rj = associate_seeing_rj(ae, port, called, tls_args=tls)
    assoc.rj_on_wire = rj  # what the tests assert: the RJ as it came off the wire
    status = None
    if assoc.is_established:
        status = assoc.send_c_echo().Status
        assoc.release()
    return assoc, status


def inbound_box(pki, run_medtls, device_port: int, protocol: str, allow=None):
    port = free_port()
    entry = {
        "name": "modality", "listen": f"127.0.0.1:{port}", "device_port": device_port,
        "allow": allow or [{"cn": "box-a"}], "protocol": protocol,
    }  # fmt: skip
    return run_medtls(box_config(pki, "box-b", inbound=[entry]), "b", [port]), port


# ---------------------------------------------------------------- names in the connection line


def test_outbound_dicom_line_names_the_ae_titles(pki, run_medtls):
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    tls_port = free_port()
    server = ae.start_server(("127.0.0.1", tls_port), block=False, ssl_context=server_ctx(pki))
    try:
        port = free_port()
        box = run_medtls(box_config(pki, "box-a", outbound=[dicom_route(tls_port, port)]), "a")
        _assoc, status = echo(port, "CT 01", "PACS")
        assert status == 0
    finally:
        server.shutdown()
    line = box.wait_log("event=connection")
    assert ' calling_ae="CT 01" called_ae=PACS' in line, line


def test_inbound_dicom_line_names_the_ae_titles(pki, run_medtls):
    with dicom_device() as device_port:
        box, port = inbound_box(pki, run_medtls, device_port, "dicom")
        _assoc, status = echo(port, "PACS", "CT01", (client_ctx(pki), None))
        assert status == 0
    # pynetdicom closes without close_notify after A-RELEASE: result=truncated (see
    # docs/operations.md) but the names are there
    line = box.wait_log("event=connection")
    assert " calling_ae=PACS called_ae=CT01" in line, line


# ---------------------------------------------------------------- calling AE bound to the cert


def test_calling_ae_bound_to_the_certificate(pki, run_medtls):
    allow = [{"cn": "box-a", "calling_ae": ["PACS"]}]
    with dicom_device() as device_port:
        box, port = inbound_box(pki, run_medtls, device_port, "dicom", allow)
        assoc, status = echo(port, "PACS", "CT01", (client_ctx(pki), None))
        assert status == 0
        assoc, status = echo(port, "MALLORY", "CT01", (client_ctx(pki), None))
        # rejected-permanent, service-user, calling-AE-title-not-recognized
        assert assoc.rj_on_wire == (1, 1, 3)
    line = box.wait_conn("calling_ae_refused", "route=modality")
    assert "calling AE title MALLORY not allowed for" in line
    assert "peer answered A-ASSOCIATE-RJ" in line
    assert " calling_ae=MALLORY called_ae=CT01" in line
    assert "calling_ae=PACS " in box.wait_log("calling_ae=PACS")


def test_calling_ae_binding_holds_nothing_back_from_an_allowed_caller(pki, run_medtls):
    """The held A-ASSOCIATE-RQ reaches the device byte for byte: a second echo on the same
    association works too."""
    allow = [{"cn": "box-a", "calling_ae": ["PACS"]}]
    with dicom_device() as device_port:
        _box, port = inbound_box(pki, run_medtls, device_port, "dicom", allow)
        ae = AE(ae_title="PACS")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="CT01", tls_args=(client_ctx(pki), None))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_echo().Status == 0
        assoc.release()


# ---------------------------------------------------------------- inbound: device unreachable


def test_inbound_dicom_device_down_rejects_transient(pki, run_medtls):
    with closed_port() as device_port:
        box, port = inbound_box(pki, run_medtls, device_port, "dicom")
        assoc, _ = echo(port, "PACS", "CT01", (client_ctx(pki), None))
        # rejected-transient, service-provider (presentation), temporary-congestion
        assert assoc.rj_on_wire == (2, 3, 1)
    line = box.wait_conn("connect_failed", "peer answered A-ASSOCIATE-RJ", "route=modality")
    assert " calling_ae=PACS called_ae=CT01" in line


def test_inbound_dicom_rj_waits_for_the_client_to_close(pki, run_medtls):
    """PS3.8 Sta13 inside TLS: no close_notify right after the RJ; the client closes first."""
    with closed_port() as device_port:
        _box, port = inbound_box(pki, run_medtls, device_port, "dicom")
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        with client_ctx(pki).wrap_socket(raw) as tls:
            tls.sendall(associate_rq("PACS", "CT01"))
            rj = b""
            while len(rj) < 10:
                chunk = tls.recv(10 - len(rj))
                assert chunk, rj
                rj += chunk
            assert rj[:1] == b"\x03"
            tls.settimeout(1.5)
            with pytest.raises(TimeoutError):
                tls.recv(100)


def test_inbound_hl7_device_down_acks_ae(pki, run_medtls):
    with closed_port() as device_port:
        box, port = inbound_box(pki, run_medtls, device_port, "hl7")
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        with client_ctx(pki).wrap_socket(raw) as tls:
            tls.sendall(b"\x0b" + hl7_message("CTRL-7").encode() + b"\x1c\x0d")
            reply = b""
            while not reply.endswith(b"\x1c\x0d"):
                chunk = tls.recv(4096)
                assert chunk, reply
                reply += chunk
            # then a clean close (close_notify): recv returns b""
            assert tls.recv(4096) == b""
    ack = python_hl7.parse(reply[1:-2].decode())
    assert str(ack.segment("MSA")[1]) == "AE"
    assert str(ack.segment("MSA")[2]) == "CTRL-7"
    line = box.wait_conn("connect_failed", "peer answered ACK AE", "route=modality")
    assert " hl7_from=RIS/RAD hl7_to=PACS/HOSP hl7_type=ORM^O01^ORM_O01" in line


@pytest.mark.parametrize("protocol", ["tcp"])
def test_inbound_tcp_device_down_is_a_plain_reset(pki, run_medtls, protocol):
    with closed_port() as device_port:
        box, port = inbound_box(pki, run_medtls, device_port, protocol)
        assoc, _ = echo(port, "PACS", "CT01", (client_ctx(pki), None))
        assert assoc.rj_on_wire is None and not assoc.is_established
    line = box.wait_conn("connect_failed", "route=modality")
    assert "answered" not in line
