"""Listening sockets and admission: what each listener serves, accept back-off, and the
handshake budget (limits.max_connections, max_handshakes, max_handshakes_per_source)."""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass

from medtls.config import Config
from medtls.core import events as ev
from medtls.engine import fdlimit
from medtls.engine.netutil import listen_socket

log = logging.getLogger("medtls")

# Inbound listeners only take TLS, whose client speaks first: the kernel holds a connection until
# its ClientHello arrives, so the first read after accept() finds it (no extra loop turn), and a
# peer that connects and stays silent holds no connection slot for the first ~7 s (SYN-ACK
# retransmissions at 1, 3 and 7 s); after that it is accepted and meets limits.handshake_timeout.
# Outbound (device) listeners cannot: a protocol whose server speaks first would never start.
DEFER_ACCEPT = 5
# accept() out of descriptors or memory: the listener leaves the epoll set for a back-off (doubling
# from the first to the last step) instead of spinning on a socket that stays readable; the error
# is logged once, then as a count every ACCEPT_LOG_WINDOW seconds while it lasts.
ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF = (0.05, 1.0)
ACCEPT_LOG_WINDOW = 10.0
# A handshake this old (seconds) is stalled: a LAN peer finishes in a few round trips, a flood
# that sends a byte and waits never does (limits.max_handshakes_per_source counts these).
STALLED_HANDSHAKE = 1.0
_NOT_PENDING = ("", 0.0)


@dataclass(frozen=True)
class ListenerSpec:
    """What a listening socket serves; `entry` is an explicit-mode entry name or ""."""

    direction: str  # outbound | inbound
    host: str
    port: int
    entry: str = ""
    transparent: bool = False

    @property
    def name(self) -> str:
        return self.entry or self.direction


def listener_specs(config: Config) -> list[ListenerSpec]:
    if config.mode == "explicit":
        specs = [
            ListenerSpec("outbound", p.listen.host, p.listen.port, p.name)
            for p in config.outbound
            if p.listen
        ]
        specs += [
            ListenerSpec("inbound", p.listen.host, p.listen.port, p.name)
            for p in config.inbound
            if p.listen
        ]
        return specs
    transparent = config.interception == "tproxy"
    lis = config.listeners
    out = [ListenerSpec("outbound", lis.address, lis.outbound, "", transparent)]
    if config.inbound:
        out.append(ListenerSpec("inbound", lis.address, lis.inbound, "", transparent))
    return out


def open_missing(
    want: list[ListenerSpec], have, config: Config
) -> dict[ListenerSpec, socket.socket]:
    """Open the wanted listeners not in `have`: all of them, or none (OSError naming the one
    that failed)."""
    opened = {}
    try:
        for spec in want:
            if spec not in have:
                try:
                    opened[spec] = listen_socket(
                        spec.host,
                        spec.port,
                        spec.transparent,
                        reuseport=config.workers > 1,
                        keepalive=config.limits.keepalive,
                        defer_accept=DEFER_ACCEPT if spec.direction == "inbound" else 0,
                    )
                except OSError as e:
                    raise OSError(
                        e.errno,
                        f"cannot listen on {spec.host}:{spec.port} ({spec.name}): {e.strerror}",
                    ) from None
    except OSError:
        for s in opened.values():
            s.close()
        raise
    return opened


class AcceptBackoff:
    """Listeners paused after accept() ran out of descriptors (or memory), and the error log's
    rate limit."""

    def __init__(self):
        self.paused: dict[ListenerSpec, tuple[socket.socket, float]] = {}  # -> (socket, until)
        self._delay: dict[ListenerSpec, float] = {}  # the last back-off step
        self._failures: dict[tuple[str, str], list] = {}  # -> [window start, count]

    def accepted(self, spec: ListenerSpec) -> None:
        """Accepting again: the next back-off starts small."""
        if self._delay:
            self._delay.pop(spec, None)

    def pause(
        self, lsock: socket.socket, spec: ListenerSpec, why: str, progress: bool, now: float
    ) -> float | None:
        """The pending connection stays in the kernel's queue and the listener stays readable:
        returns until when the caller takes it out of epoll, or None. After progress (this turn
        accepted some), the next loop turn, which may close some, tries again; the back-off grows
        only while nothing can be accepted."""
        until = None
        if progress:
            self._delay.pop(spec, None)
        else:
            first, last = ACCEPT_BACKOFF
            delay = min(last, self._delay.get(spec, first / 2) * 2)
            self._delay[spec] = delay
            until = now + delay
            self.paused[spec] = (lsock, until)
        key = (spec.name, why)
        window = self._failures.get(key)
        if window is None:
            self._failures[key] = [now, 0]
            log.error("accept on %s failed: %s (pausing the listener, retrying)", spec.name, why)
        else:
            window[1] += 1
        return until

    def due(self, now: float) -> list[tuple[ListenerSpec, socket.socket]]:
        """The paused listeners whose back-off is over (and the error count, logged)."""
        resume = []
        for spec, (lsock, until) in list(self.paused.items()):
            if now >= until:
                del self.paused[spec]
                resume.append((spec, lsock))
        for key, window in list(self._failures.items()):
            if now - window[0] >= ACCEPT_LOG_WINDOW:
                if window[1]:
                    log.error(
                        "accept on %s failed: %s (%d times in the last %g s)",
                        key[0], key[1], window[1], now - window[0],
                    )  # fmt: skip
                    self._failures[key] = [now, 0]
                else:
                    del self._failures[key]
        return resume


class Admission:
    """Whether a new connection may be served: limits.max_connections, and for inbound ones not
    yet authenticated, limits.max_handshakes and max_handshakes_per_source.

    max_connections counts every connection except inbound ones still unauthenticated, which
    count against max_handshakes instead: a flood of handshakes that never finish cannot take
    the places of authorized peers, and is refused itself. A source with
    max_handshakes_per_source handshakes stalled (older than STALLED_HANDSHAKE) gets no more;
    one still completing many at once (a peer box carries all its device's connections from one
    address) is not held back."""

    def __init__(self, limits):
        # Inbound connections not yet authenticated: conn id -> (source, accepted at), and their
        # number per source.
        self.pending: dict[int, tuple[str, float]] = {}
        self._by_source: dict[str, int] = {}
        self._for = None
        self.caps = None
        self.fit(limits)

    def fit(self, limits) -> None:
        """Raise RLIMIT_NOFILE for (and fit the caps to) `limits`, once per configuration."""
        if limits is self._for:
            return
        self._for = limits
        self.caps = fdlimit.raise_and_fit(limits)
        if self.caps.warning:
            log.warning("%s", self.caps.warning)

    def refusal(self, open_conns: int, direction: str, source: str) -> tuple[str, str] | None:
        """Why a new connection from `source` cannot be served now (reason, detail), or None."""
        caps = self.caps
        pending = len(self.pending)
        if open_conns - pending >= caps.connections:
            return ev.LIMIT, f"limits.max_connections ({self._cap_text(caps.connections)}) reached"
        if direction == "inbound":
            if (
                self._by_source.get(source, 0) >= caps.per_source
                and self._stalled(source) >= caps.per_source
            ):
                n = self._cap_text(caps.per_source)
                return ev.SOURCE_LIMIT, f"limits.max_handshakes_per_source ({n}) reached: {source}"
            if pending >= caps.handshakes:
                return ev.HANDSHAKE_LIMIT, (
                    f"limits.max_handshakes ({self._cap_text(caps.handshakes)}) reached"
                )
        return None

    def _cap_text(self, n: int) -> str:
        return f"{n}, lowered to fit RLIMIT_NOFILE" if self.caps.warning else str(n)

    def _stalled(self, source: str) -> int:
        # Only for a source with many pending: at most max_handshakes entries.
        since = time.monotonic() - STALLED_HANDSHAKE
        return sum(1 for src, t in self.pending.values() if src == source and t <= since)

    def begin(self, conn_id: int, source: str, t0: float) -> None:
        """An inbound handshake starts: it counts against the handshake budget."""
        self.pending[conn_id] = (source, t0)
        self._by_source[source] = self._by_source.get(source, 0) + 1

    def end(self, conn_id: int) -> None:
        """Authenticated or gone: out of the handshake budget."""
        source, _ = self.pending.pop(conn_id, _NOT_PENDING)
        if source:
            left = self._by_source[source] - 1
            if left:
                self._by_source[source] = left
            else:
                del self._by_source[source]


def source_key(ip: str) -> str:
    """The address a per-source limit counts: IPv4 as is, IPv6 by its /64 (one host can use
    every address of its subnet)."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    except ValueError:
        return ip
