"""A TCP relay put between a client side and a server side during the checks (never during a
measurement): it forwards every byte unchanged and records the extensions of both TLS hellos of
each connection (medtls/tlshello.py), which shows whether the pair itself resumed."""

import contextlib
import socket
import threading

from medtls.core.tlshello import NotTls, hello_extensions

from .loopback import LoopbackServer

_HELLO_MAX = 1 << 16  # a hello longer than this is not what the contenders send


class HelloTap(LoopbackServer):
    def __init__(self, upstream: int):
        self.upstream = upstream
        self.hellos: list[dict[str, set[int] | None]] = []  # per connection, in accept order
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        super().__init__()

    def handle(self, down: socket.socket) -> None:
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        except OSError as exc:
            self.errors.append(f"tap cannot reach 127.0.0.1:{self.upstream}: {exc}")
            down.close()
            return
        record: dict[str, set[int] | None] = {"client": None, "server": None}
        self.hellos.append(record)
        ends = [down, up]
        for src, dst, key in ((down, up, "client"), (up, down, "server")):
            args = (src, dst, record, key, ends)
            t = threading.Thread(target=self._copy, args=args, daemon=True)
            t.start()
            self.threads.append(t)

    def _copy(self, src, dst, record: dict, key: str, ends: list) -> None:
        head = b""
        src.settimeout(10)
        try:
            while data := src.recv(65536):
                if record[key] is None and len(head) < _HELLO_MAX:
                    head += data
                    try:
                        found = hello_extensions(head)
                    except NotTls as exc:
                        self.errors.append(f"{key} stream: {exc}")
                        head = b"\xff" * _HELLO_MAX
                        found = None
                    if found is not None:
                        record[key] = found[1]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with self._lock:
                ends.append(None)
                last = len(ends) == 4  # both directions of this connection have ended
            if last:
                for s in ends[:2]:
                    s.close()

    def close(self) -> None:
        super().close()
        for t in self.threads:
            t.join(2)
