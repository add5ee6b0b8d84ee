"""Tiny TCP endpoints for checking where ACME validation connections end up (no ACME here).

`serve NAME ADDR PORT [--transparent]`: accepts for ever, sends NAME and the connecting peer,
closes; one line per connection on stdout. `probe SRC DST PORT`: connects from SRC with a 3 s
bound and prints what it got, or `FAILED <reason>`. `window SOURCES...`: opens the interception
validation window (the product's `validation_window`) until stdin closes.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from types import SimpleNamespace

IP_TRANSPARENT = 19


def serve(name: str, addr: str, port: int, transparent: bool) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if transparent:
        srv.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    srv.bind((addr, port))
    srv.listen(16)
    print(f"listening {name} {addr}:{port}", flush=True)
    while True:
        conn, peer = srv.accept()
        local = conn.getsockname()
        print(f"conn {peer[0]} -> {local[0]}:{local[1]}", flush=True)
        with contextlib.suppress(OSError):
            conn.sendall(f"{name} {peer[0]} {local[0]}:{local[1]}\n".encode())
        conn.close()


def probe(src: str, dst: str, port: int) -> None:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.bind((src, 0))
        s.connect((dst, port))
        print(s.recv(200).decode().strip() or "FAILED empty")
    except OSError as e:
        print(f"FAILED {type(e).__name__} {e}")
    finally:
        s.close()


def window(sources: list[str]) -> None:
    from medtls.interception import validation_window

    cfg = SimpleNamespace(
        mode="transparent", enrollment=SimpleNamespace(validation_sources=sources)
    )
    with validation_window(cfg) as steered:
        print("open " + " ".join(steered), flush=True)
        sys.stdin.read()
    print("closed", flush=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(args[0], args[1], int(args[2]), "--transparent" in args)
    elif cmd == "probe":
        probe(args[0], args[1], int(args[2]))
    elif cmd == "window":
        window(args)
    else:
        raise SystemExit(f"unknown command {cmd}")
