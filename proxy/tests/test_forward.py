"""relay.forward(), the one-pass read event: pump() finishes what it cannot; no byte lost."""

import contextlib
import socket
import ssl

import pytest
from medtls.engine import relay
from medtls.tls import context as tlsctx


def _pair():
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
    return a, b


def _drain(sock: socket.socket) -> bytes:
    got = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := sock.recv(1 << 20):
            got += chunk
    return got


class Peer:
    """A TLS peer over memory BIOs whose wire is one end of a socketpair."""

    def __init__(self, ctx: ssl.SSLContext, server: bool, wire: socket.socket):
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_side=server)
        self.wire = wire

    def push(self) -> None:
        data = self.out.read()
        if data:
            self.wire.sendall(data)

    def pull(self) -> bytes:
        self.inc.write(_drain(self.wire))
        got = b""
        with contextlib.suppress(ssl.SSLWantReadError):
            while True:
                chunk = self.tls.read(1 << 20)
                if not chunk:
                    break
                got += chunk
        return got


@pytest.fixture
def tls_link(pki):
    """(side, peer, scratch): a TLS relay Side (server role) handshaken with a Peer."""
    side_sock, wire = _pair()

    def ctx(server, cn):
        return tlsctx.build_context(server, "bcp195", pki.ca, pki.crt(cn), pki.key(cn), None)

    side = relay.Side(None, "server", side_sock)
    side.start_tls(ctx(True, "box-b"), server=True)
    peer = Peer(ctx(False, "box-a"), False, wire)
    scratch = memoryview(bytearray(1 << 18))
    done = set()
    for _ in range(10):
        with contextlib.suppress(ssl.SSLWantReadError):
            peer.tls.do_handshake()
            done.add("peer")
        peer.push()
        side.recv_tls(scratch)
        with contextlib.suppress(ssl.SSLWantReadError):
            side.tls.do_handshake()
            done.add("side")
        side.flush()
        peer.inc.write(_drain(wire))
        if done == {"peer", "side"}:
            break
    assert done == {"peer", "side"}
    yield side, peer, scratch
    side_sock.close()
    wire.close()


def _plain_side(name: str):
    mine, far = _pair()
    return relay.Side(None, name, mine), far


def test_tls_to_plain_delivers_in_one_pass(tls_link):
    side, peer, scratch = tls_link
    dst, dst_far = _plain_side("client")
    pool = relay.BufferPool(1 << 18)
    pipe = relay.Pipe(side, dst, pool)
    peer.tls.write(b"q" * 1000)
    peer.push()
    assert relay.forward(side, pipe, scratch) is True
    assert _drain(dst_far) == b"q" * 1000
    assert pipe.mv is None and pipe.count == 1000  # buffer back in the pool, bytes counted


def test_input_beyond_the_buffer_is_left_to_pump(tls_link):
    side, peer, scratch = tls_link
    dst, dst_far = _plain_side("client")
    pool = relay.BufferPool(8192)
    pipe = relay.Pipe(side, dst, pool)
    payload = bytes(range(256)) * 400  # 102,400 bytes: seven records, twelve buffers
    peer.tls.write(payload)
    peer.push()
    assert relay.forward(side, pipe, scratch) is False  # records still in the BIO
    got = _drain(dst_far)
    assert got == payload[: len(got)] and len(got) == 8192
    relay.pump((pipe, relay.Pipe(dst, side, pool)))
    assert got + _drain(dst_far) == payload


def test_full_destination_keeps_the_rest_in_the_pipe():
    src, src_far = _plain_side("client")
    dst, dst_far = _plain_side("server")
    dst.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    filled = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            filled += dst.sock.send(b"f" * 65536)
    pool = relay.BufferPool(1 << 16)
    pipes = (relay.Pipe(src, dst, pool), relay.Pipe(dst, src, pool))
    src_far.send(b"y" * 5000)
    assert relay.forward(src, pipes[0], memoryview(bytearray(16))) is False
    assert pipes[0].end - pipes[0].start == 5000  # nothing sent, nothing dropped
    got = b""
    for _ in range(1000):
        got += _drain(dst_far)
        dst.wblocked = False
        relay.pump(pipes)
        if len(got) >= filled + 5000:
            break
    assert len(got) == filled + 5000 and got.endswith(b"y" * 5000)


def test_plain_to_tls_is_encrypted_and_sent(tls_link):
    side, peer, scratch = tls_link
    src, src_far = _plain_side("client")
    pool = relay.BufferPool(1 << 18)
    pipe = relay.Pipe(src, side, pool)
    src_far.send(b"MSH|^~\\&|" * 100)
    assert relay.forward(src, pipe, scratch) is True
    assert not side.pending_out
    assert peer.pull() == b"MSH|^~\\&|" * 100


def test_end_of_stream_goes_to_pump(tls_link):
    side, peer, scratch = tls_link
    dst, dst_far = _plain_side("client")
    pool = relay.BufferPool(1 << 18)
    pipes = (relay.Pipe(side, dst, pool), relay.Pipe(dst, side, pool))
    peer.tls.write(b"last")
    with contextlib.suppress(ssl.SSLWantReadError):
        peer.tls.unwrap()  # close_notify after the data
    peer.push()
    assert relay.forward(side, pipes[0], scratch) is False
    relay.pump(pipes)
    assert _drain(dst_far) == b"last"
    assert dst_far.recv(1) == b""  # the close_notify became a FIN
