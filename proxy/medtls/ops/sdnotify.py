"""sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET.

Message building and the watchdog interval are plain functions; Notifier does the I/O and
is a no-op when the daemon does not run under systemd.
"""

from __future__ import annotations

import os
import socket
import time


def notify_message(**fields) -> bytes:
    """notify_message(READY=1, STATUS='x') -> b'READY=1\\nSTATUS=x'. Newlines are not allowed."""
    lines = []
    for key, value in fields.items():
        text = str(value)
        if "\n" in text:
            text = text.replace("\n", " ")
        lines.append(f"{key}={text}")
    return "\n".join(lines).encode()


def socket_address(notify_socket: str | None) -> str | bytes | None:
    """Abstract sockets start with '@' in the variable and NUL on the wire."""
    if not notify_socket:
        return None
    if notify_socket.startswith("@"):
        return b"\0" + notify_socket[1:].encode()
    if notify_socket.startswith("/"):
        return notify_socket
    return None


def watchdog_interval(env: dict[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), None if not enabled for us."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    wd_pid = env.get("WATCHDOG_PID")
    if wd_pid and wd_pid.isdigit() and int(wd_pid) != pid:
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 2_000_000


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    def __init__(self, env: dict[str, str] | None = None):
        env = dict(os.environ) if env is None else env
        self.address = socket_address(env.get("NOTIFY_SOCKET"))
        self.watchdog = watchdog_interval(env, os.getpid())
        self._last_ping = 0.0
        self._sock = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        self.sent: list[bytes] = []

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields) -> bool:
        if self._sock is None:
            return False
        msg = notify_message(**fields)
        try:
            self._sock.sendto(msg, self.address)
        except OSError:
            return False
        self.sent.append(msg)
        del self.sent[:-50]
        return True

    def ready(self, status: str = "") -> None:
        fields = {"READY": 1}
        if status:
            fields["STATUS"] = status
        self.send(**fields)

    def reloading(self) -> None:
        self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec())

    def stopping(self, status: str = "") -> None:
        fields = {"STOPPING": 1}
        if status:
            fields["STATUS"] = status
        self.send(**fields)

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def watchdog_due(self, now: float) -> bool:
        return self.watchdog is not None and now - self._last_ping >= self.watchdog

    def ping(self, now: float | None = None) -> bool:
        """Send WATCHDOG=1 if half the watchdog period has passed; call from the serving loop."""
        now = time.monotonic() if now is None else now
        if not self.watchdog_due(now):
            return False
        self._last_ping = now
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
