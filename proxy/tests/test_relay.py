"""Relay correctness through a medtls pair: plain -> A -> TLS -> B -> plain (explicit mode)."""

import hashlib
import os
import selectors
import socket
import threading
import time


def recv_all(s: socket.socket) -> bytes:
    out = []
    while True:
        b = s.recv(262144)
        if not b:
            return b"".join(out)
        out.append(b)


class OneShotServer:
    """Accepts one connection and runs `handler(conn)` in a thread; result in `.result`."""

    def __init__(self, handler):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.result = None
        self.error = None

        def run():
            c, _ = self.sock.accept()
            with c:
                try:
                    self.result = handler(c)
                except Exception as e:  # surfaced by the test
                    self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout=30):
        self.thread.join(timeout)
        self.sock.close()
        assert not self.thread.is_alive(), "server did not finish"
        if self.error:
            raise self.error
        return self.result


def test_echo_and_log_line(make_pair, echo_server):
    pair = make_pair(echo_server.port)
    payload = os.urandom(300_000)
    with socket.create_connection(("127.0.0.1", pair.a_port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == payload
    line = pair.a.wait_conn("ok", "bytes_device_to_lan=300000")
    assert "direction=outbound route=far" in line and "tls=TLSv1.3" in line
    assert "cipher=TLS_" in line and 'peer="O=Test Hospital,CN=box-b' in line
    assert "bytes_lan_to_device=300000" in line
    assert len(pair.a.conn_lines()) == 1  # one line per connection, nothing else
    bline = pair.b.wait_conn("ok", "direction=inbound route=svc", "bytes_lan_to_device=300000")
    assert 'peer="O=Test Hospital,CN=box-a' in bline and f"device_port={echo_server.port}" in bline


def test_client_half_close_then_server_replies(make_pair):
    def handler(c):
        data = recv_all(c)  # until the client's FIN arrives through the pair
        time.sleep(0.2)
        c.sendall(b"reply-after-eof:" + hashlib.sha256(data).hexdigest().encode())
        return data

    srv = OneShotServer(handler)
    pair = make_pair(srv.port)
    payload = os.urandom(1_000_000)
    with socket.create_connection(("127.0.0.1", pair.a_port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        reply = recv_all(s)
    assert srv.join() == payload
    assert reply == b"reply-after-eof:" + hashlib.sha256(payload).hexdigest().encode()


def test_server_half_close_then_client_keeps_sending(make_pair):
    def handler(c):
        c.sendall(b"greeting")
        c.shutdown(socket.SHUT_WR)  # server is done talking, still listening
        return recv_all(c)

    srv = OneShotServer(handler)
    pair = make_pair(srv.port)
    payload = os.urandom(500_000)
    with socket.create_connection(("127.0.0.1", pair.a_port), timeout=10) as s:
        assert recv_all(s) == b"greeting"  # EOF propagated to the client
        time.sleep(0.2)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        assert s.recv(1) == b""
    assert srv.join() == payload


def test_backpressure_slow_reader_loses_nothing(make_pair):
    def handler(c):
        h = hashlib.sha256()
        n = 0
        while True:
            b = c.recv(4096)
            if not b:
                return n, h.hexdigest()
            h.update(b)
            n += len(b)
            if n < 2_000_000:
                time.sleep(0.001)

    srv = OneShotServer(handler)
    pair = make_pair(
        srv.port, a_over={"limits": {"buffer_size": 8192}}, b_over={"limits": {"buffer_size": 8192}}
    )
    payload = os.urandom(8_000_000)
    with socket.create_connection(("127.0.0.1", pair.a_port), timeout=30) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
    assert srv.join() == (len(payload), hashlib.sha256(payload).hexdigest())


def test_one_gib_hash_identical(make_pair):
    size = 1 << 30
    block = os.urandom(1 << 20)

    def handler(c):
        h = hashlib.sha256()
        n = 0
        buf = bytearray(1 << 20)
        while True:
            k = c.recv_into(buf)
            if not k:
                return n, h.hexdigest()
            h.update(memoryview(buf)[:k])
            n += k

    srv = OneShotServer(handler)
    pair = make_pair(
        srv.port,
        a_over={"limits": {"buffer_size": 262144}},
        b_over={"limits": {"buffer_size": 262144}},
    )
    sent = hashlib.sha256()
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", pair.a_port), timeout=120) as s:
        for i in range(size // len(block)):
            chunk = i.to_bytes(8, "big") + block[8:]
            sent.update(chunk)
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
    dt = time.monotonic() - t0
    assert srv.join(120) == (size, sent.hexdigest())
    print(f"1 GiB through the pair in {dt:.1f}s = {size / dt / 1e6:.0f} MB/s")


def test_200_concurrent_connections(make_pair, echo_server):
    pair = make_pair(echo_server.port)
    sel = selectors.DefaultSelector()
    socks = {}
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", pair.a_port), timeout=10)
        msg = f"connection {i} ".encode() * 200
        s.sendall(msg)
        s.shutdown(socket.SHUT_WR)
        s.setblocking(False)
        socks[s] = (msg, bytearray())
        sel.register(s, selectors.EVENT_READ)
    done = 0
    deadline = time.monotonic() + 60
    while done < 200 and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            s = key.fileobj
            b = s.recv(65536)
            if b:
                socks[s][1].extend(b)
            else:
                sel.unregister(s)
                done += 1
    assert done == 200
    for s, (msg, got) in socks.items():
        assert bytes(got) == msg
        s.close()
