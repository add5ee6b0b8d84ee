"""Local control socket: one JSON request line in, one JSON reply line out.

Used by `medtls status` and `medtls reload`. Access is limited by the socket's file mode
(0660, owner of the daemon) rather than by any protocol-level authentication.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import socketserver
import stat
import threading
from collections.abc import Callable

MAX_REQUEST = 4096
# How often the server thread looks for shutdown() (seconds): a stop waits at most this long for
# it, after the drain (socketserver's default, 0.5 s, showed up in every stop).
SHUTDOWN_POLL = 0.05


class ControlError(Exception):
    pass


class ControlSocketInUse(OSError):
    """Another process answers on the control socket: a medtls of this config is running."""


def answering(path: str) -> bool:
    """True if a process accepts connections on the Unix socket `path` (a socket file left by
    a process that died refuses them)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(path)
    except OSError:
        return False
    finally:
        sock.close()
    return True


def refuse_if_running(path: str) -> None:
    """Raise ControlSocketInUse if a daemon answers on `path`: a second `medtls run` of the
    same configuration must neither take its control socket nor remove it."""
    if answering(path):
        raise ControlSocketInUse(
            errno.EADDRINUSE,
            f"control.socket {path}: another medtls is running and answers there; not starting "
            "(stop it first, or give this configuration its own control.socket)",
        )


# json is imported at the first request: a serving process that is never asked costs 0.15 MiB
# less (docs/performance.md, item 43).


def encode(obj: dict) -> bytes:
    import json

    return json.dumps(obj, sort_keys=True).encode() + b"\n"


def decode(line: bytes) -> dict:
    import json

    try:
        obj = json.loads(line.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(f"malformed message: {exc}") from None
    if not isinstance(obj, dict):
        raise ControlError("malformed message: not a JSON object")
    return obj


def dispatch(handlers: dict[str, Callable[[dict], dict]], request: dict) -> dict:
    command = request.get("command")
    handler = handlers.get(command) if isinstance(command, str) else None
    if handler is None:
        return {
            "ok": False,
            "error": f"unknown command {command!r} (known: {', '.join(sorted(handlers))})",
        }
    try:
        return handler(request)
    except Exception as exc:  # the daemon must survive any bad request
        return {"ok": False, "error": f"{command} failed: {exc}"}


class ControlServer:
    def __init__(self, path: str, handlers: dict[str, Callable[[dict], dict]]):
        self.path = path
        self.handlers = handlers
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, mode=0o750, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                refuse_if_running(path)  # only a socket nobody answers on is left over
                os.unlink(path)
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.connection.settimeout(5)
                try:
                    line = self.rfile.readline(MAX_REQUEST)
                    reply = dispatch(outer.handlers, decode(line))
                except ControlError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except OSError:
                    return
                with contextlib.suppress(OSError):
                    self.wfile.write(encode(reply))

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        os.chmod(path, 0o660)  # owner and group (e.g. an operators' group), nobody else
        self._inode = os.lstat(path).st_ino
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            args=(SHUTDOWN_POLL,),
            name="medtls-control",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self._inode:  # still ours, not a successor's
                os.unlink(self.path)


def request(path: str, command: str, timeout: float = 10.0, **args) -> dict:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise ControlError(
                f"cannot reach the medtls daemon at {path}: {exc.strerror or exc} "
                "(is it running? see control.socket in the config)"
            ) from None
        try:
            sock.sendall(encode({"command": command, **args}))
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"no answer from the daemon at {path} within {timeout:g}s") from None
        except OSError as exc:
            raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not data:
        raise ControlError(f"the daemon at {path} closed the connection without answering")
    return decode(data)
