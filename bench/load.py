"""Load generator: plain TCP clients that talk to the sink protocol (see bench/sink.py).

Bulk senders use one preallocated buffer and sendall (the kernel copies straight from it);
receivers use recv_into; every call releases the GIL, so threads are enough to outrun a relay.
"""

import os
import socket
import threading
import time

CHUNK = 1 << 20
# no progress for this long = a stalled relay (a failure, not a slow result)
IO_TIMEOUT = float(os.environ.get("BENCH_IO_TIMEOUT", "30"))
_PAYLOAD = memoryview(bytes(range(256)) * (CHUNK // 256))


class BenchError(RuntimeError):
    pass


def _connect(port: int, timeout: float = 30.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _recv_exact(s: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = s.recv_into(view[got:])
        if n == 0:
            raise BenchError(f"connection closed after {got} of {len(view)} bytes")
        got += n


def _send_bulk(port: int, nbytes: int) -> None:
    with _connect(port, timeout=IO_TIMEOUT) as s:
        s.sendall(b"D" + nbytes.to_bytes(8, "big"))
        left = nbytes
        while left > 0:
            n = min(left, CHUNK)
            s.sendall(_PAYLOAD[:n])
            left -= n
        reply = bytearray(8)
        _recv_exact(s, memoryview(reply))
        got = int.from_bytes(reply, "big")
        if got != nbytes:
            raise BenchError(f"sink received {got} bytes of {nbytes}")


def bulk(port: int, nbytes: int) -> float:
    """Seconds to push nbytes through one connection, until the sink confirmed the count."""
    t0 = time.perf_counter()
    _send_bulk(port, nbytes)
    return time.perf_counter() - t0


def _threads(target, count: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def parallel(port: int, conns: int, nbytes_each: int) -> float:
    """Seconds for conns connections to each push nbytes_each at the same time."""
    gate = threading.Barrier(conns + 1)
    box = {}

    def one(_i: int) -> None:
        gate.wait()
        _send_bulk(port, nbytes_each)

    def starter() -> None:
        gate.wait()
        box["t0"] = time.perf_counter()

    t = threading.Thread(target=starter)
    t.start()
    errors = _threads(one, conns)
    t.join()
    if errors:
        raise BenchError(f"{len(errors)} of {conns} parallel streams failed: {errors[0]}")
    return time.perf_counter() - box["t0"]


def conn_rate(port: int, seconds: float, concurrency: int, size: int = 64) -> tuple[int, float]:
    """Connections completed per second: connect, send size bytes, read the echo, close."""
    msg = b"E" + bytes(size)
    stop_at = time.perf_counter() + seconds
    counts = [0] * concurrency
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        buf = memoryview(bytearray(size))
        while time.perf_counter() < stop_at:
            try:
                with _connect(port, timeout=10) as s:
                    s.sendall(msg)
                    _recv_exact(s, buf)
                counts[i] += 1
            except (OSError, BenchError) as exc:
                failures.append(exc)
                if len(failures) > 20:
                    return

    t0 = time.perf_counter()
    _threads(worker, concurrency)
    elapsed = time.perf_counter() - t0
    done = sum(counts)
    if len(failures) > max(3, done // 100):
        raise BenchError(f"{len(failures)} failed connections ({done} ok): {failures[0]}")
    return done, elapsed


def rtt(port: int, count: int, size: int = 1024, warmup: int = 50) -> list[int]:
    """Round-trip times (ns) of size-byte request/response on one persistent connection."""
    msg = bytes(range(256)) * (size // 256) + bytes(size % 256)
    buf = memoryview(bytearray(size))
    out = []
    with _connect(port) as s:
        s.sendall(b"E")
        for i in range(count + warmup):
            t0 = time.perf_counter_ns()
            s.sendall(msg)
            _recv_exact(s, buf)
            dt = time.perf_counter_ns() - t0
            if i >= warmup:
                out.append(dt)
        if bytes(buf) != msg:
            raise BenchError("echo does not match the request")
    return out


def open_idle(port: int, count: int, concurrency: int = 8) -> list[socket.socket]:
    """count connections, each proven end to end by a 1-byte echo, then left idle."""
    socks: list[socket.socket] = []
    lock = threading.Lock()
    per = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]

    def worker(i: int) -> None:
        buf = memoryview(bytearray(1))
        for _ in range(per[i]):
            s = _connect(port)
            with lock:
                socks.append(s)
            s.sendall(b"Ex")
            _recv_exact(s, buf)

    errors = _threads(worker, concurrency)
    if errors:
        for s in socks:
            s.close()
        raise BenchError(f"{len(errors)} idle-connection openers failed: {errors[0]}")
    return socks


def echo_check(port: int, payload: bytes = b"medtls-bench") -> None:
    with _connect(port, timeout=10) as s:
        s.sendall(b"E" + payload)
        buf = memoryview(bytearray(len(payload)))
        _recv_exact(s, buf)
        if bytes(buf) != payload:
            raise BenchError(f"echo through 127.0.0.1:{port} returned {bytes(buf)!r}")
