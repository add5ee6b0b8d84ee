"""Protocol-aware refusals: on an outbound route with `protocol: dicom | hl7`, a peer leg that
cannot be established or authenticated is answered in the device's protocol (A-ASSOCIATE-RJ,
ACK AE/AR), and a DICOM peer leg lost mid-association gives the device an A-ABORT. Asserted with
what real clients print: DCMTK's echoscu/storescu, pynetdicom, python-hl7."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time

import hl7 as python_hl7
import pytest
from conftest import box_config, free_port
from dicom_util import associate_seeing_rj, echoscu, storescu
from hl7.client import MLLPClient
from medtls.core.dicom import associate_rq
from medtls.core.refusal import ARTIM_SECONDS
from pynetdicom import AE, evt
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.sop_class import Verification

UNSYNCED_CLOCK = {"require_sync": True, "not_before": "2100-01-01"}  # the clock is "wrong"


class TlsPeer:
    """A TLS server in a thread playing the PACS/HIS: completes (or fails) each handshake, then
    holds the connection until the client closes or 5 s pass. Bounded: stops with the test."""

    def __init__(self, ctx: ssl.SSLContext):
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            with contextlib.suppress(OSError), conn:
                tls = self.ctx.wrap_socket(conn, server_side=True)
                with tls:
                    tls.recv(1)

    def stop(self):
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


def server_ctx(pki, trust=None, tls12=False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.crt("pacs"), pki.key("pacs"))
    ctx.load_verify_locations(trust or pki.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# cause -> (box result label, transient?, RJ source, RJ reason)
CAUSES = {
    "peer_down": ("connect_failed", True, 3, 1),
    "wrong_identity": ("identity_mismatch", False, 2, 1),
    "distrusts_box_tls13": ("peer_unknown_ca", False, 1, 1),
    "distrusts_box_tls12": ("peer_unknown_ca", False, 1, 1),
    "clock_unsynced": ("clock_unsynced", True, 3, 2),
    "crl_stale": ("crl_unusable", True, 3, 2),
}
DCMTK_TEXT = {
    (True, 3, 1): ("Rejected Transient", "Service Provider (Presentation Related)",
                   "Temporary Congestion"),
    (True, 3, 2): ("Rejected Transient", "Service Provider (Presentation Related)",
                   "Local Limit Exceeded"),
    (False, 2, 1): ("Rejected Permanent", "Service Provider (ACSE Related)",
                    "No Reason"),
    (False, 1, 1): ("Rejected Permanent", "Service User", "No Reason"),
}  # fmt: skip


@pytest.fixture
def refusing_box(pki, run_medtls, tmp_path):
    """Start a box whose outbound route (`protocol`) fails for `cause`; returns (box, port)."""
    peers: list[TlsPeer] = []
    held: list[socket.socket] = []

    def start(cause: str, protocol: str, **extra):
        verify = {"cn": "pacs"}
        if cause == "peer_down":
            # Nobody listens, for the whole test: a port bound but never listening. (A port from
            # free_port() was once taken meanwhile by another test's TLS PACS under load: the
            # box then relayed to it and pynetdicom saw no rejection.)
            down = socket.socket()
            down.bind(("127.0.0.1", 0))
            held.append(down)
            tls_port = down.getsockname()[1]
        else:
            trust = pki.rogue_ca if cause.startswith("distrusts") else None
            peer = TlsPeer(server_ctx(pki, trust, tls12=cause.endswith("tls12")))
            peers.append(peer)
            tls_port = peer.port
        if cause == "wrong_identity":
            verify = {"cn": "not-the-pacs"}
        elif cause == "clock_unsynced":
            extra["clock"] = UNSYNCED_CLOCK
        elif cause == "crl_stale":
            crl = pki.crl(tmp_path / "stale.pem", days=-1)
            extra["trust"] = {"ca": str(pki.ca), "crl": str(crl)}
        port = free_port()
        route = {
            "name": "pacs", "address": "127.0.0.1", "tls_port": tls_port,
            "listen": f"127.0.0.1:{port}", "verify": verify, "protocol": protocol,
        }  # fmt: skip
        box = run_medtls(box_config(pki, "box-a", outbound=[route], **extra), "a", [port])
        return box, port

    yield start
    for p in peers:
        p.stop()
    for s in held:
        s.close()


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_dicom_device_sees_the_rejection_and_its_reason(refusing_box, cause):
    label, transient, source, reason = CAUSES[cause]
    box, port = refusing_box(cause, "dicom")
    # DCMTK echoscu and storescu
    result, src, why = DCMTK_TEXT[transient, source, reason]
    for tool in (echoscu, storescu):
        r = tool(port, timeout=30)
        out = r.stdout + r.stderr
        assert r.returncode != 0
        assert "Association Rejected" in out, out
        assert f"Result: {result}, Source: {src}" in out, out
        assert f"Reason: {why}" in out, out
    # pynetdicom
    ae = AE(ae_title="CT01")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 15
    _, rj = associate_seeing_rj(ae, port, "PACS")
    assert rj == (2 if transient else 1, source, reason)
    line = box.wait_conn(label, "device answered A-ASSOCIATE-RJ", "to CT01 calling PACS")
    assert "route=pacs" in line


def hl7_message(control_id: str) -> str:
    return (
        "MSH|^~\\&|RIS|RAD|PACS|HOSP|20260101120000||ORM^O01^ORM_O01|"
        f"{control_id}|P|2.5.1\rPID|1||12345^^^HOSP||DOE^JANE\r"
    )


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_hl7_sender_gets_an_ack_naming_the_cause(refusing_box, cause):
    label, transient, _, _ = CAUSES[cause]
    box, port = refusing_box(cause, "hl7")
    with MLLPClient("127.0.0.1", port) as client:
        client.socket.settimeout(15)
        reply = client.send_message(hl7_message("CTRL-42"))
    ack = python_hl7.parse(reply)
    msa, msh = ack.segment("MSA"), ack.segment("MSH")
    assert str(msa[1]) == ("AE" if transient else "AR")
    assert str(msa[2]) == "CTRL-42"
    assert f"({label})" in str(msa[3])
    # mirrored as a receiver would: sending <-> receiving, ACK^O01^ACK, same version
    assert [str(msh[i]) for i in (3, 4, 5, 6)] == ["PACS", "HOSP", "RIS", "RAD"]
    assert str(msh[9]) == "ACK^O01^ACK" and str(msh[12]) == "2.5.1"
    assert str(msh[10]) and str(msh[10]) != "CTRL-42"
    box.wait_conn(label, "device answered ACK")


def test_hostile_device_gets_a_bounded_read_and_a_plain_close(refusing_box):
    box, port = refusing_box("peer_down", "dicom")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(100) == b""
    box.wait_conn("connect_failed", "not answered: first PDU has type 0x47")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(bytes((1, 0)) + (1 << 30).to_bytes(4, "big"))  # a 1 GiB A-ASSOCIATE-RQ
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(100) == b""
    box.wait_conn("connect_failed", "limit 65536")


def dicom_route(tls_port: int, port: int) -> dict:
    return {
        "name": "pacs", "address": "127.0.0.1", "tls_port": tls_port,
        "listen": f"127.0.0.1:{port}", "verify": {"cn": "pacs"}, "protocol": "dicom",
    }  # fmt: skip


def test_dcmtk_tls_tools_still_work_on_a_good_route(pki, run_medtls, tmp_path):
    """`protocol: dicom` changes nothing while the peer is there (pynetdicom PACS over TLS)."""
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    tls_port = free_port()
    server = ae.start_server(("127.0.0.1", tls_port), block=False,
                             ssl_context=server_ctx(pki))  # fmt: skip
    try:
        port = free_port()
        route = dicom_route(tls_port, port)
        box = run_medtls(box_config(pki, "box-a", outbound=[route]), "a", [port])
        r = echoscu(port)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "tls=TLSv1.3" in box.wait_log("event=connection")
    finally:
        server.shutdown()


class Cutter:
    """A TCP forwarder between the box and the PACS that resets both legs on `cut()`."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.lsock.settimeout(10)
        self.port = self.lsock.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True)]
        self.threads[0].start()

    def _run(self):
        with contextlib.suppress(OSError):
            a, _ = self.lsock.accept()
            b = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            self.socks = [a, b]
            for src, dst in ((a, b), (b, a)):
                src.settimeout(0.1)
                t = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self.threads.append(t)
                t.start()

    def _pump(self, src, dst):
        with contextlib.suppress(OSError):
            while not self.done.is_set():  # bounded by the test: cut() ends it
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                dst.sendall(data)

    def cut(self):
        self.done.set()
        for t in self.threads:
            t.join(5)
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST: SO_LINGER on, 0 seconds
        self.socks = []
        self.lsock.close()


def test_peer_leg_lost_mid_association_aborts_the_device(pki, run_medtls):
    ae_pacs = AE(ae_title="PACS")
    ae_pacs.add_supported_context(Verification)
    tls_port = free_port()
    server = ae_pacs.start_server(("127.0.0.1", tls_port), block=False,
                                  ssl_context=server_ctx(pki))  # fmt: skip
    cutter = Cutter(tls_port)
    try:
        port = free_port()
        route = dicom_route(cutter.port, port)
        box = run_medtls(box_config(pki, "box-a", outbound=[route]), "a", [port])
        received = []
        ae = AE(ae_title="CT01")
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.network_timeout = 15
        handlers = [(evt.EVT_PDU_RECV, lambda e: received.append(e.pdu))]
        assoc = ae.associate("127.0.0.1", port, ae_title="PACS", evt_handlers=handlers)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        cutter.cut()
        deadline = time.monotonic() + 10
        while assoc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert assoc.is_aborted, (received, box.log())
        assert any(isinstance(p, A_ABORT_RQ) for p in received), received
        box.wait_conn("reset", "device sent A-ABORT")
    finally:
        cutter.cut()
        server.shutdown()


def test_slow_device_is_closed_at_the_deadline(refusing_box):
    limits = {"handshake_timeout": 1, "connect_timeout": 5, "drain_timeout": 2}
    box, port = refusing_box("peer_down", "dicom", limits=limits)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(bytes((1, 0, 0, 0, 1, 0)) + b"\x00\x01")  # a header, then nothing
        t0 = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(100) == b""
        assert time.monotonic() - t0 < 5
    box.wait_conn("connect_failed", "no complete first message from the device")


def _read_rj(s: socket.socket) -> bytes:
    rj = b""
    while len(rj) < 10:
        chunk = s.recv(10 - len(rj))
        assert chunk, rj
        rj += chunk
    return rj


def test_after_the_rj_the_device_closes_or_artim_does(refusing_box):
    """PS3.8 (Sta13): after an A-ASSOCIATE-RJ the requester closes the transport. The box keeps
    the connection open for it (a requester that sees the end before it read the RJ may report
    an abort: pynetdicom did under load), and closes it itself when ARTIM ends the wait."""
    box, port = refusing_box("peer_down", "dicom")
    rq = associate_rq("CT01", "PACS")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(rq)
        assert _read_rj(s)[:1] == b"\x03"
        s.settimeout(1.5)
        with pytest.raises(TimeoutError):
            s.recv(100)  # no FIN before the device closes
    box.wait_conn("connect_failed", "device answered A-ASSOCIATE-RJ")
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(rq)
        assert _read_rj(s)[:1] == b"\x03"
        t0 = time.monotonic()
        assert s.recv(100) == b""  # the device never closes: ARTIM ends it with a FIN
        assert ARTIM_SECONDS - 1 < time.monotonic() - t0 < ARTIM_SECONDS + 5
    lines = [x for x in box.conn_lines() if " result=connect_failed " in x]
    assert len(lines) == 2, lines  # one line per refusal, none for the close that follows
    # what the device still sends is read and dropped, up to 64 KiB: then a reset, said in the log
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(rq)
        assert _read_rj(s)[:1] == b"\x03"
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            s.sendall(bytes(70 * 1024))
            assert s.recv(100) == b""
    box.wait_log("reset after the answer: more than 65536 bytes")
