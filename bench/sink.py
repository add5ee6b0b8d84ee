"""Plain TCP sink at the end of every chain.

The first byte of a connection picks its behaviour:
  b"D" + 8-byte big-endian length N: discard N bytes, then answer N (8 bytes) as receipt.
  b"E"  echo: send every following byte back until EOF.
No half-close is needed, so relays that cannot forward a TCP FIN over TLS still work.
Several processes share the port with SO_REUSEPORT, each with its own selector loop, so that
neither many idle connections nor one fast stream make the sink the bottleneck.

Run: python -m bench.sink PORT [PROCESSES]; prints "ready" once listening.
"""

import contextlib
import os
import selectors
import signal
import socket
import sys

BUF = 1 << 20


def _listener(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(4096)
    return s


def serve(listener: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    buf = bytearray(BUF)
    view = memoryview(buf)
    state: dict[socket.socket, list] = {}  # sock -> [mode, count, header, expected]

    def close(sock: socket.socket) -> None:
        sel.unregister(sock)
        del state[sock]
        sock.close()

    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if key.data is None:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                state[conn] = [0, 0, bytearray(), 0]
                sel.register(conn, selectors.EVENT_READ, True)
                continue
            st = state[sock]
            try:
                n = sock.recv_into(buf)
            except OSError:
                close(sock)
                continue
            if n == 0:
                close(sock)
                continue
            start = 0
            if st[0] == 0:
                st[0] = buf[0]
                start = 1
            if st[0] == ord("D"):
                hdr = st[2]
                if len(hdr) < 8:
                    take = min(8 - len(hdr), n - start)
                    hdr += view[start : start + take]
                    start += take
                    if len(hdr) < 8:
                        continue
                    st[3] = int.from_bytes(hdr, "big")
                st[1] += n - start
                if st[1] >= st[3]:
                    try:
                        sock.sendall(st[1].to_bytes(8, "big"))
                    except OSError:
                        close(sock)
            elif start < n:
                try:
                    sock.sendall(view[start:n])
                except OSError:
                    close(sock)


def main(argv: list[str]) -> int:
    port = int(argv[0])
    procs = int(argv[1]) if len(argv) > 1 else 2
    listeners = [_listener(port) for _ in range(procs)]
    children = []
    for i in range(1, procs):
        pid = os.fork()
        if pid == 0:
            for j, ls in enumerate(listeners):
                if j != i:
                    ls.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                serve(listeners[i])
            finally:
                os._exit(0)
        children.append(pid)

    def stop(*_):
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for ls in listeners[1:]:
        ls.close()
    print("ready", flush=True)
    serve(listeners[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
