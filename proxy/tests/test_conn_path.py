"""Per-connection path: the handshake loop does no idle turns, a client's last handshake flight
leaves with the first data, accepted sockets carry the listener's TCP options."""

import socket
import ssl
import threading
import time

import pytest
from conftest import box_config, free_port
from medtls.core import policy
from medtls.core.certparse import CertParseError
from test_lifecycle import TLSClient, daemon_env, wait_for  # noqa: F401 (fixture)


def _count_handshake_calls(monkeypatch) -> list:
    calls = []
    real = ssl.SSLObject.do_handshake

    def counting(self):
        calls.append(self.server_side)
        return real(self)

    monkeypatch.setattr(ssl.SSLObject, "do_handshake", counting)
    return calls


def test_server_side_handshake_takes_two_steps(pki, request, monkeypatch):
    """TLS 1.3 with a client certificate: ClientHello in -> our flight out; client's
    Certificate/Finished in -> done. No do_handshake() before the ClientHello is there."""
    _, rec, port, _ = request.getfixturevalue("daemon_env")
    calls = _count_handshake_calls(monkeypatch)  # after start: validate() shakes hands too
    for delay in (0.0, 0.3):  # ClientHello already waiting when accepted, and not yet
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        time.sleep(delay)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(pki.ca)
        ctx.load_cert_chain(pki.crt("box-a"), pki.key("box-a"))
        with ctx.wrap_socket(raw) as s:
            s.sendall(b"ping")
            assert s.recv(10) == b"ping"
    assert wait_for(lambda: rec.names().count("connection_closed") == 2)
    assert calls == [True] * 4, calls


def test_client_closing_before_hello_is_a_handshake_failure(request):
    _, rec, port, _ = request.getfixturevalue("daemon_env")
    socket.create_connection(("127.0.0.1", port), timeout=10).close()
    assert wait_for(lambda: "connection_closed" in rec.names())
    assert ("handshake_failed", "handshake_error") in rec.events


TCP_INFO_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in in struct tcp_info (Linux >= 4.6)


class SegmentCountingServer:
    """A TLS 1.3 server over a plain socket that records, per connection, how many TCP
    segments with data the client had sent by the time its first application bytes were read."""

    def __init__(self, pki):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(pki.ca)
        self.ctx.load_cert_chain(pki.crt("box-b"), pki.key("box-b"))
        self.ctx.num_tickets = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.segments: list[int] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.settimeout(10)
                self._one(c)

    def _one(self, c: socket.socket):
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(inc, out, server_side=True)
        first = b""
        while not first:
            data = c.recv(65536)
            if not data:
                return
            inc.write(data)
            try:
                tls.do_handshake()
                first = tls.read(1000)
            except ssl.SSLWantReadError:
                if out.pending:
                    time.sleep(0.2)  # the device's first bytes are surely at the relay now
                    c.sendall(out.read())
        info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        at = TCP_INFO_DATA_SEGS_IN
        self.segments.append(int.from_bytes(info[at : at + 4], "little"))
        tls.write(first)
        c.sendall(out.read())

    def close(self):
        self.sock.close()


def test_client_finished_leaves_with_the_first_data(pki, run_medtls):
    """The device's first bytes, waiting while medtls shook hands, go out in the same segment
    as medtls' Certificate/Finished: ClientHello, then Finished + data (not a third segment)."""
    server = SegmentCountingServer(pki)
    a_port = free_port()
    cfg = box_config(pki, "box-a", outbound=[{
        "name": "far", "address": "127.0.0.1", "tls_port": server.port,
        "listen": f"127.0.0.1:{a_port}", "verify": {"cn": "box-b"}}])  # fmt: skip
    m = run_medtls(cfg, "a", [a_port])
    try:
        for i in range(3):
            with socket.create_connection(("127.0.0.1", a_port), timeout=10) as dev:
                dev.sendall(b"hello %d" % i)
                assert dev.recv(100) == b"hello %d" % i
        assert server.segments == [2, 2, 2], m.log()
    finally:
        server.close()


def _opts(sock: socket.socket) -> tuple:
    return (
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0,
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0,
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
    )


def test_accepted_and_upstream_sockets_carry_nodelay_and_keepalive(pki, request):
    """Accepted sockets get TCP_NODELAY and keepalive from their listener (no setsockopt per
    connection); a reload that turns keepalive off reaches the next accepted socket."""
    d, _, port, cfg = request.getfixturevalue("daemon_env")
    c = TLSClient(pki, port, "box-a")
    try:
        assert c.echo() == b"ping"
        (conn,) = d.conns.values()
        assert _opts(conn.client.sock) == (True, True, 60, 10, 6)
        assert _opts(conn.server.sock) == (True, True, 60, 10, 6)
        assert not conn.client.sock.getblocking() and not conn.server.sock.getblocking()
    finally:
        c.close()
    assert wait_for(lambda: not d.conns)
    cfg([{"cn": "box-a"}], limits={"keepalive": False})
    assert d.reload()
    c = TLSClient(pki, port, "box-a")
    try:
        assert c.echo() == b"ping"
        (conn,) = d.conns.values()
        assert _opts(conn.client.sock)[:2] == (True, False)
        assert _opts(conn.server.sock)[:2] == (True, False)
    finally:
        c.close()


def test_peer_identity_is_parsed_once_per_certificate(pki, request, monkeypatch):
    """Reconnecting peers: the identity comes from the certificate alone, so it is parsed once;
    a different certificate is parsed (and judged) on its own."""
    parsed = []
    real = policy.cert_identity

    def counting(der):
        parsed.append(der)
        return real(der)

    monkeypatch.setattr(policy, "cert_identity", counting)
    monkeypatch.setattr(policy, "_identities", {})
    d, rec, port, cfg = request.getfixturevalue("daemon_env")
    cfg([{"cn": "box-a"}, {"cn": "pacs"}])
    assert d.reload()
    for cn in ("box-a", "box-a", "box-a", "pacs", "box-a"):
        c = TLSClient(pki, port, cn)
        try:
            assert c.echo() == b"ping"
        finally:
            c.close()
    assert wait_for(lambda: rec.names().count("connection_closed") == 5)
    assert len(parsed) == 2, parsed
    peers = [e[3] for e in rec.events if e[0] == "tls_established"]
    assert ["CN=pacs" in p for p in peers] == [False, False, False, True, False]


def test_identity_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(policy, "_identities", {})
    monkeypatch.setattr(policy, "IDENTITY_CACHE_SIZE", 3)
    for i in range(5):
        with pytest.raises(CertParseError):  # refusals are remembered too
            policy.peer_identity(b"der%d" % i)
    assert list(policy._identities) == [b"der2", b"der3", b"der4"]
