"""Relay buffers are taken from the pool only while bytes are in flight (plain sockets)."""

import socket

from medtls.engine import relay


def _pair():
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
    return a, b


def test_pool_reuses_and_bounds_buffers():
    pool = relay.BufferPool(1 << 20)
    assert pool.keep == 4
    bufs = [pool.take() for _ in range(6)]
    for mv in bufs:
        pool.give(mv)
    assert len(pool.free) == 4
    assert pool.take() is bufs[3]


def test_pipe_holds_buffer_only_while_bytes_wait():
    pool = relay.BufferPool(8192)
    src_peer, src_sock = _pair()
    dst_sock, dst_peer = _pair()
    src, dst = relay.Side(None, "client", src_sock), relay.Side(None, "server", dst_sock)
    pipes = (relay.Pipe(src, dst, pool), relay.Pipe(dst, src, pool))
    assert pipes[0].mv is None and pipes[1].mv is None  # idle: no buffer

    src_peer.send(b"x" * 1000)
    relay.recv_plain(src, pipes[0])
    relay.pump(pipes)
    assert dst_peer.recv(4096) == b"x" * 1000
    assert pipes[0].mv is None and pool.free  # delivered: buffer back in the pool

    # Fill the destination socket so bytes must wait: the pipe keeps its buffer and its bytes.
    dst_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    filled = 0
    try:
        while True:
            filled += dst_sock.send(b"f" * 65536)
    except BlockingIOError:
        pass
    src_peer.send(b"y" * 5000)
    relay.recv_plain(src, pipes[0])
    relay.pump(pipes)
    assert pipes[0].mv is not None and pipes[0].end - pipes[0].start == 5000
    got = b""
    while len(got) < filled + 5000:
        try:
            got += dst_peer.recv(1 << 20)
        except BlockingIOError:
            dst.wblocked = False
            relay.pump(pipes)
    assert got.endswith(b"y" * 5000)
    assert pipes[0].mv is None
    for s in (src_peer, src_sock, dst_sock, dst_peer):
        s.close()


def test_pool_gives_free_buffers_back_only_after_a_quiet_interval():
    pool = relay.BufferPool(4096, keep_bytes=4 * 4096)
    a, b = pool.take(), pool.take()
    pool.give(a)
    pool.give(b)
    assert not pool.trim_if_idle()  # buffers were taken since the last check: keep them
    assert len(pool.free) == 2
    assert pool.trim_if_idle()  # nothing taken since: drop them
    assert pool.free == []
    assert not pool.trim_if_idle()  # nothing left to drop
