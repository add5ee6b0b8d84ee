"""A TLS stream that ends without close_notify, and streams cut by the drain timeout, must reach
the plain side as a reset (RST), never as a clean end of stream (issue 16, defects 3 and 8).

The hostile peers are driven by hand over memory BIOs, so the test decides which ciphertext
bytes reach the socket: whole records, half a record, and the TCP FIN without close_notify.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import box_config, free_port
from medtls.tls.openssl import send_close_notify
from ops import atna, promparse

RECORD = 16384  # one full TLS record of application data
KILL_AFTER = 4 << 20  # bytes seen by the far end before a box is killed
BIG = 2 << 30  # planned size of the transfers a kill cuts (never reached)


def tls_context(pki, cn: str, server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(pki.ca)
    ctx.load_cert_chain(pki.crt(cn), pki.key(cn))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class HandTLS:
    """TLS over memory BIOs on a blocking socket: ciphertext is produced here and written to
    the socket byte-exact, so a record can be cut anywhere and close_notify left out."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, server: bool):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_side=server)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_pending()
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError("medtls closed during the handshake") from None
                self.inc.write(chunk)
        self._send_pending()

    def _send_pending(self) -> None:
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def records(self, payload: bytes) -> bytes:
        """The ciphertext of `payload` (one record per 16 KiB), not sent."""
        for i in range(0, len(payload), RECORD):
            self.tls.write(payload[i : i + RECORD])
        return self.out.read()

    def fin(self) -> None:
        """TCP FIN without close_notify."""
        self.sock.shutdown(socket.SHUT_WR)


class PlainSide:
    """What a plain endpoint saw: bytes received and how the stream ended ("eof" or "reset")."""

    def __init__(self):
        self.received = 0
        self.ending = ""

    def read_until_end(self, sock: socket.socket) -> None:
        try:
            while True:
                chunk = sock.recv(262144)
                if not chunk:
                    self.ending = "eof"
                    return
                self.received += len(chunk)
        except ConnectionResetError:
            self.ending = "reset"
        except TimeoutError:
            self.ending = "hung"


class OneShot:
    """A plain TCP server for one connection, running `handler(conn)` in a thread."""

    def __init__(self, handler):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.error: BaseException | None = None

        def run():
            try:
                c, _ = self.sock.accept()
                c.settimeout(30)
                with c:
                    handler(c)
            except BaseException as e:  # surfaced by join()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 30) -> None:
        self.thread.join(timeout)
        self.sock.close()
        assert not self.thread.is_alive(), "plain server did not finish"
        if self.error:
            raise self.error


def outbound_box(pki, run_medtls, far_port: int, **limits):
    """box-a: a plain device client on the returned port, TLS to 127.0.0.1:`far_port`."""
    port = free_port()
    cfg = box_config(pki, "box-a", outbound=[{
        "name": "far", "address": "127.0.0.1", "tls_port": far_port,
        "listen": f"127.0.0.1:{port}", "verify": {"cn": "box-b"}}])  # fmt: skip
    cfg["limits"].update(limits)
    return run_medtls(cfg, "a", [port]), port


def inbound_box(pki, run_medtls, device_port: int, **limits):
    """box-b: TLS from box-a on the returned port, plain to 127.0.0.1:`device_port`."""
    port = free_port()
    cfg = box_config(pki, "box-b", inbound=[{
        "name": "svc", "listen": f"127.0.0.1:{port}", "device_port": device_port,
        "allow": [{"cn": "box-a"}]}])  # fmt: skip
    cfg["limits"].update(limits)
    return run_medtls(cfg, "b", [port]), port


def cut_stream(tls: HandTLS, sent: int, mid_record: bool) -> int:
    """Send `sent` bytes of records, cut as an attacker would: the last record dropped (FIN
    between records) or only its first half sent (FIN mid-record). Returns the bytes of
    plaintext the far side could have decrypted at most."""
    whole = tls.records(b"d" * (sent - RECORD))
    last = tls.records(b"t" * RECORD)
    tls.sock.sendall(whole + (last[: len(last) // 2] if mid_record else b""))
    tls.fin()
    return sent - RECORD


@pytest.mark.parametrize("mid_record", [False, True], ids=["between_records", "mid_record"])
def test_inbound_fin_without_close_notify_resets_the_device(pki, run_medtls, mid_record):
    """A hostile TLS client (LAN -> device) sends records, then FIN without close_notify."""
    seen = PlainSide()
    server = OneShot(seen.read_until_end)
    b, port = inbound_box(pki, run_medtls, server.port)
    sent = 20 * RECORD
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        tls = HandTLS(s, tls_context(pki, "box-a", server=False), server=False)
        most = cut_stream(tls, sent, mid_record)
        server.join()
    assert seen.ending == "reset", f"device saw {seen.ending} after {seen.received} of {sent}"
    assert seen.received <= most < sent
    line = b.wait_conn("truncated", "direction=inbound")
    assert "close_notify" in line


@pytest.mark.parametrize("mid_record", [False, True], ids=["between_records", "mid_record"])
def test_outbound_fin_without_close_notify_resets_the_device(pki, run_medtls, mid_record):
    """A hostile TLS server (LAN -> device, on an outbound route) ends without close_notify."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    a, port = outbound_box(pki, run_medtls, lsock.getsockname()[1])
    sent = 20 * RECORD
    seen = PlainSide()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as device, lsock:
        far, _ = lsock.accept()
        far.settimeout(10)
        with far:
            tls = HandTLS(far, tls_context(pki, "box-b", server=True), server=True)
            most = cut_stream(tls, sent, mid_record)
            seen.read_until_end(device)
    assert seen.ending == "reset", f"device saw {seen.ending} after {seen.received} of {sent}"
    assert seen.received <= most < sent
    line = a.wait_conn("truncated", "direction=outbound")
    assert "close_notify" in line


def test_truncation_is_counted_and_audited(pki, run_medtls):
    """result=truncated reaches the metrics and the audit trail: an ATNA Security Alert (Node
    Authentication failure) naming the peer, since the end of its stream failed TLS
    authentication."""
    rx_dir = Path(tempfile.mkdtemp(prefix="mt-trunc-"))  # short: AF_UNIX paths are limited
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(rx_dir / "log"))
    rx.settimeout(0.2)
    try:
        metrics_port = free_port()
        seen = PlainSide()
        server = OneShot(seen.read_until_end)
        port = free_port()
        cfg = box_config(pki, "box-b", inbound=[{
            "name": "svc", "listen": f"127.0.0.1:{port}", "device_port": server.port,
            "allow": [{"cn": "box-a"}]}],
            metrics={"enabled": True, "listen": f"127.0.0.1:{metrics_port}"},
            audit={"transport": "local", "local_socket": str(rx_dir / "log")})  # fmt: skip
        b = run_medtls(cfg, "b", [port])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            tls = HandTLS(s, tls_context(pki, "box-a", server=False), server=False)
            cut_stream(tls, 4 * RECORD, mid_record=False)
            server.join()
        assert seen.ending == "reset"
        b.wait_conn("truncated")
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            families = promparse.parse(resp.read().decode())
        labels = {"direction": "inbound", "peer": "svc", "result": "truncated"}
        assert promparse.value(families, "medtls_connections_total", **labels) == 1
        alert = _wait_audit(rx, "truncated")
    finally:
        rx.close()
        shutil.rmtree(rx_dir, ignore_errors=True)
    assert atna.validate_event(alert) == []
    event = atna.summary(alert)
    assert event["event"] == "110113" and event["types"] == ["110126"]  # Node Authentication
    assert event["outcome"] == "4"  # minor failure
    assert "close_notify" in event["details"]["Alert Description"]
    assert any("CN=box-a" in p.get("UserID", "") for p in event["participants"])


def _wait_audit(rx: socket.socket, needle: str, timeout: float = 10) -> str:
    """The XML of the first audit message (RFC 5424 over a local socket) containing `needle`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = rx.recv(65536).decode()
        except TimeoutError:
            continue
        if needle in msg:
            return msg[msg.index("<AuditMessage") :]
    raise AssertionError(f"no audit message with {needle!r}")


def test_close_notify_then_fin_stays_ok(pki, run_medtls):
    """The same peer ending properly: every byte, a clean FIN, result=ok."""
    seen = PlainSide()
    server = OneShot(seen.read_until_end)
    b, port = inbound_box(pki, run_medtls, server.port)
    sent = 20 * RECORD
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        tls = HandTLS(s, tls_context(pki, "box-a", server=False), server=False)
        s.sendall(tls.records(b"d" * sent))
        send_close_notify(tls.tls)  # unwrap() would wait for the reply
        s.sendall(tls.out.read())
        tls.fin()
        server.join()
        b.wait_conn("ok", "direction=inbound")
    assert (seen.ending, seen.received) == ("eof", sent)


# ---------------------------------------------------------------- kill -9 of the far box


def _stream_out(conn: socket.socket, stats: dict) -> None:
    """Send until the connection fails (bounded by BIG bytes)."""
    chunk = b"x" * 262144
    try:
        while stats["sent"] < BIG:
            conn.sendall(chunk)
            stats["sent"] += len(chunk)
    except OSError as e:
        stats["error"] = type(e).__name__


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_kill_far_box_during_download_resets_the_device(make_pair):
    """LAN -> device: B (the far box) is killed mid-transfer; A must reset the device."""
    stats = {"sent": 0}
    server = OneShot(lambda c: _stream_out(c, stats))
    pair = make_pair(server.port)
    seen = PlainSide()
    with socket.create_connection(("127.0.0.1", pair.a_port), timeout=15) as device:
        while seen.received < KILL_AFTER:
            seen.received += len(device.recv(262144))
        pair.b.proc.kill()
        pair.b.proc.wait(10)
        seen.read_until_end(device)
    server.join()
    assert seen.ending == "reset", f"device saw {seen.ending} after {seen.received} bytes"
    assert seen.received < BIG
    pair.a.wait_conn("truncated", "direction=outbound")


def test_kill_near_box_during_upload_resets_the_far_device(make_pair):
    """Device -> LAN: A is killed mid-transfer; B must reset the plain server behind it."""
    seen = PlainSide()

    def serve(c):
        seen.read_until_end(c)

    server = OneShot(serve)
    pair = make_pair(server.port)
    stats = {"sent": 0}
    device = socket.create_connection(("127.0.0.1", pair.a_port), timeout=15)
    uploader = threading.Thread(target=_stream_out, args=(device, stats), daemon=True)
    uploader.start()
    try:
        _wait(lambda: seen.received >= KILL_AFTER or seen.ending, 30, "the upload to start")
        pair.a.proc.kill()
        pair.a.proc.wait(10)
        server.join()
    finally:
        device.close()
        uploader.join(10)
    assert seen.ending == "reset", f"server saw {seen.ending} after {seen.received} bytes"
    assert seen.received < BIG
    pair.b.wait_conn("truncated", "direction=inbound")


# ---------------------------------------------------------------- drain timeout (defect 8)


@pytest.mark.parametrize("stopped", ["a", "b"])
def test_drain_timeout_resets_a_transfer_in_flight(make_pair, stopped):
    """SIGTERM with a download in flight that cannot finish in limits.drain_timeout (2 s): the
    device on that box's plain side sees a reset, not a clean end, and the box exits within
    the timeout + 1 s. The device client stops reading, so every socket on the way is full."""
    stats = {"sent": 0}
    server = OneShot(lambda c: _stream_out(c, stats))
    limits = {"limits": {"drain_timeout": 2}}
    pair = make_pair(server.port, a_over=limits, b_over=limits)
    box = pair.a if stopped == "a" else pair.b
    seen = PlainSide()
    with socket.create_connection(("127.0.0.1", pair.a_port), timeout=15) as device:
        while seen.received < 1 << 20:
            seen.received += len(device.recv(262144))
        _wait(lambda: _stuck(stats), 15, "the transfer to stall")
        t0 = time.monotonic()
        box.signal(signal.SIGTERM)
        box.proc.wait(10)
        took = time.monotonic() - t0
        print(f"drain: box {stopped} exited {took:.3f}s after SIGTERM, drain_timeout 2")
        if stopped == "a":
            seen.read_until_end(device)
    pair.b.proc.kill()  # ends the server's sender, if still running
    server.join()
    if stopped == "a":
        assert seen.ending == "reset", f"device saw {seen.ending} after {seen.received} bytes"
    else:
        assert stats["error"] == "ConnectionResetError", stats
    assert took < 2 + 1
    assert box.proc.returncode == 0
    line = box.wait_conn("shutdown")
    assert "drain_timeout" in line


def _stuck(stats: dict) -> bool:
    """True once the sender made no progress for 0.3 s."""
    before = stats["sent"]
    time.sleep(0.3)
    return stats["sent"] == before


def test_transfer_finishing_within_the_drain_is_complete(make_pair, echo_server):
    """A transfer in flight at SIGTERM that ends within the drain: byte-exact, result=ok."""
    pair = make_pair(echo_server.port, a_over={"limits": {"drain_timeout": 20}})
    payload = bytes(range(256)) * 8192  # 2 MiB
    got = bytearray()
    with socket.create_connection(("127.0.0.1", pair.a_port), timeout=15) as device:

        def read_all():
            while chunk := device.recv(262144):
                got.extend(chunk)

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        device.sendall(payload[: len(payload) // 2])
        pair.a.signal(signal.SIGTERM)
        pair.a.wait_log("stopping: listeners closed, draining")
        device.sendall(payload[len(payload) // 2 :])
        device.shutdown(socket.SHUT_WR)
        reader.join(15)
    assert bytes(got) == payload
    pair.a.proc.wait(10)
    assert pair.a.proc.returncode == 0
    pair.a.wait_conn("ok", "direction=outbound", f"bytes_device_to_lan={len(payload)}")
