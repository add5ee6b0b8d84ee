"""RFC 5424 syslog messages and RFC 5425 (TLS, octet-counting) transport for the audit trail.

format_message/frame are plain functions; AuditSender owns a bounded queue and one thread
that (re)connects and sends. Messages stay queued while the repository is unreachable; when
the queue is full the oldest message is dropped and counted.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable

FACILITY_AUTHPRIV = 10
SEVERITY_WARNING = 4
SEVERITY_NOTICE = 5
AUDIT_MSGID = "DICOM+RFC3881"
BOM = "\ufeff"
NILVALUE = "-"


def _field(text: str, limit: int) -> str:
    """PRINTUSASCII without spaces, as RFC 5424 requires for header fields."""
    clean = "".join(c for c in str(text) if 33 <= ord(c) <= 126)
    return clean[:limit] or NILVALUE


def timestamp(when: float | None = None) -> str:
    moment = dt.datetime.fromtimestamp(time.time() if when is None else when, dt.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def format_message(
    msg: str,
    hostname: str,
    app_name: str = "medtls",
    procid: str | int | None = None,
    msgid: str = AUDIT_MSGID,
    severity: int = SEVERITY_NOTICE,
    facility: int = FACILITY_AUTHPRIV,
    when: float | None = None,
) -> bytes:
    """One RFC 5424 message; MSG is UTF-8 with BOM, no structured data."""
    pri = facility * 8 + severity
    fields = _header_fields(hostname, app_name, os.getpid() if procid is None else procid, msgid)
    return f"<{pri}>1 {timestamp(when)} {fields} {BOM}{msg}".encode()


@functools.lru_cache(maxsize=64)
def _header_fields(hostname: str, app_name: str, procid, msgid: str) -> str:
    """HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA (constant per process)."""
    return " ".join(
        [
            _field(hostname, 255),
            _field(app_name, 48),
            _field(str(procid), 128),
            _field(msgid, 32),
            NILVALUE,
        ]
    )


def frame(message: bytes) -> bytes:
    """RFC 5425/6587 octet counting: MSG-LEN SP SYSLOG-MSG."""
    return str(len(message)).encode() + b" " + message


def client_context(ca: str, certificate: str = "", key: str = "") -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certificate:
        ctx.load_cert_chain(certificate, key or None)
    return ctx


class AuditSender:
    """Queue + sender thread. `connect` returns a connected socket-like object or raises."""

    def __init__(
        self,
        connect: Callable[[], socket.socket],
        queue_size: int = 10000,
        retry_interval: float = 5.0,
        stream: bool = True,
        on_error: Callable[[str], None] | None = None,
    ):
        self._connect = connect
        self._stream = stream
        self._queue: collections.deque[bytes] = collections.deque()
        self._limit = queue_size
        self._retry = retry_interval
        self._cond = threading.Condition()
        self._stop = False
        self._stopped = threading.Event()  # retry sleeps end early only on stop
        self._sock = None
        self._on_error = on_error or (lambda text: None)
        self.sent = 0
        self.dropped = 0
        self.connected = False
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="medtls-audit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, message: bytes) -> None:
        with self._cond:
            sock = self._sock
            if not self._queue and not self._stream and sock is not None:
                # A datagram to the local syslog socket goes out right here: waking the sender
                # thread for every connection costs the daemon's loop a thread switch (and the
                # GIL) per message. Anything unusual (full socket, error) takes the queue.
                try:
                    sock.send(message, socket.MSG_DONTWAIT)
                except (OSError, ValueError):
                    pass
                else:
                    self.sent += 1
                    return
            if len(self._queue) >= self._limit:
                self._queue.popleft()
                self.dropped += 1
            was_empty = not self._queue
            self._queue.append(message)
            if was_empty:  # the sender waits only on an empty queue
                self._cond.notify()

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def preload(self, messages: list[bytes]) -> int:
        """Queue `messages` ahead of everything else (a previous run's); returns how many of the
        oldest did not fit in the queue and were dropped (and counted)."""
        with self._cond:
            room = max(0, self._limit - len(self._queue))
            lost = max(0, len(messages) - room)
            self._queue.extendleft(reversed(messages[lost:]))
            self.dropped += lost
            if self._queue:
                self._cond.notify()
        return lost

    def take_queued(self) -> list[bytes]:
        """After stop(): the messages that were never sent, oldest first."""
        with self._cond:
            out = list(self._queue)
            self._queue.clear()
        return out

    def stop(self, flush_timeout: float = 2.0) -> None:
        """Give queued messages (e.g. Application Stop) flush_timeout seconds to leave."""
        deadline = time.monotonic() + flush_timeout
        while self.queued() and self.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        with self._cond:
            self._stop = True
            self._stopped.set()
            self._cond.notify()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()) + 1)
        self._close()

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self.connected = False

    def _peer_closed(self) -> bool:
        """A stream the receiver has closed would silently swallow the next message."""
        if not self._stream or self._sock is None:
            return False
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return False
            timeout = self._sock.gettimeout()
            self._sock.setblocking(False)
            try:
                data = self._sock.recv(1)
            except (ssl.SSLWantReadError, BlockingIOError):
                return False
            finally:
                self._sock.settimeout(timeout)
            return data == b""
        except (OSError, ssl.SSLError, ValueError):
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                message = self._queue[0]
            try:
                if self._sock is not None and self._peer_closed():
                    self._close()
                if self._sock is None:
                    self._sock = self._connect()
                    self.connected = True
                if self._stream:
                    self._sock.sendall(frame(message))
                else:
                    self._sock.send(message)
            except (OSError, ssl.SSLError) as exc:
                self.last_error = str(exc)
                self._on_error(self.last_error)
                self._close()
                self._stopped.wait(self._retry)
                continue
            with self._cond:
                if self._queue and self._queue[0] is message:
                    self._queue.popleft()
                self.sent += 1


def tls_connector(
    host: str, port: int, ctx: ssl.SSLContext, server_name: str = "", timeout: float = 5.0
) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        raw = socket.create_connection((host, port), timeout=timeout)
        try:
            sock = ctx.wrap_socket(raw, server_hostname=server_name or host)
        except BaseException:
            raw.close()
            raise
        sock.settimeout(timeout)
        return sock

    return connect


def local_connector(path: str) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return sock

    return connect
