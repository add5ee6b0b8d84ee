"""Socket helpers: listeners, transparent upstream sockets, original destination."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import struct

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75
SO_ORIGINAL_DST = 80


@functools.lru_cache(maxsize=256)
def family_of(host: str) -> socket.AddressFamily:
    # Cached: the upstream of every connection is one of a few configured addresses.
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def listen_socket(
    host: str,
    port: int,
    transparent: bool = False,
    reuseport: bool = False,
    backlog: int = 1024,
    keepalive: bool | None = None,
    defer_accept: int = 0,
) -> socket.socket:
    """A non-blocking listener; with `keepalive` given, it also carries the per-connection
    options (`set_options`), which Linux copies to every accepted socket.

    `defer_accept` (seconds, for listeners whose clients speak first): the kernel hands a
    connection to accept() only once its first data arrived (or the time ran out)."""
    fam = family_of(host)
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if transparent:
            set_transparent(s, fam)
        if keepalive is not None:
            set_options(s, keepalive)
        if defer_accept:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, defer_accept)
        s.bind((host, port))
        s.listen(backlog)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def set_transparent(s: socket.socket, fam: socket.AddressFamily) -> None:
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
    else:
        s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)


def set_options(s: socket.socket, keepalive: bool) -> None:
    """Per-connection options: no Nagle delay; keepalive to notice dead idle peers."""
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1 if keepalive else 0)
    if keepalive:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)


def upstream_socket(
    dst_host: str, keepalive: bool, spoof_source: str | None = None
) -> socket.socket:
    """A non-blocking socket for the far side; with `spoof_source` it binds to that foreign IP."""
    fam = family_of(dst_host)
    # SOCK_NONBLOCK: non-blocking from socket(), without the extra ioctl of setblocking().
    s = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        set_options(s, keepalive)
        if spoof_source is not None:
            set_transparent(s, fam)
            s.bind((spoof_source, 0))
    except BaseException:
        s.close()
        raise
    return s


def original_dst_nat(s: socket.socket) -> tuple[str, int]:
    """Pre-DNAT destination (conntrack) of an accepted IPv4 socket."""
    raw = s.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


def abort(s: socket.socket | None) -> None:
    """Close with RST so the other end sees a failure, not a clean end of stream."""
    if s is None:
        return
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
