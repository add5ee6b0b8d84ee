"""File descriptors against `limits`: what a configuration needs and what RLIMIT_NOFILE allows.

Every connection holds two descriptors (the accepted socket and its upstream). The process holds
at most `max_connections + max_handshakes` connections (docs/configuration.md, `limits`), plus a
few descriptors of its own (listeners, epoll, wakeup pair, control and metrics sockets, audit,
files read at reload).
"""

from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass

# Descriptors outside the connections: ~10 while serving, a few more during a reload or a scrape.
RESERVE = 32


@dataclass(frozen=True)
class Caps:
    """The connection limits in force: the configured ones, or smaller ones that fit the
    descriptor limit (then `warning` says so)."""

    connections: int
    handshakes: int
    per_source: int
    warning: str = ""


def descriptors_needed(max_connections: int, max_handshakes: int) -> int:
    """The RLIMIT_NOFILE a process needs to serve both limits without ever meeting EMFILE
    (roles/proxy sizes the unit's LimitNOFILE= with the same formula)."""
    return 2 * (max_connections + max_handshakes) + RESERVE


def fit(limits, soft: int, hard: int) -> Caps:
    """`limits` as far as `soft` descriptors allow; a warning names the keys and both numbers.

    A box that cannot serve its configured maximum still serves what fits (refusing the excess
    with `max_connections`) rather than not at all: the device behind it keeps its traffic."""
    mc, mh = limits.max_connections, limits.max_handshakes
    per_source = limits.max_handshakes_per_source
    needed = descriptors_needed(mc, mh)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return Caps(mc, mh, per_source)
    units = max(2, (soft - RESERVE) // 2)
    handshakes = min(mh, max(1, units // 4))
    connections = min(mc, max(1, units - handshakes))
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    warning = (
        f"limits.max_connections ({mc}) and limits.max_handshakes ({mh}) need {needed} file "
        f"descriptors, but RLIMIT_NOFILE is {soft} (hard limit {hard_text}): serving at most "
        f"{connections} connections and {handshakes} handshakes; raise LimitNOFILE= of the "
        f"service to {needed} or lower limits.max_connections"
    )
    return Caps(connections, handshakes, min(per_source, handshakes), warning)


def raise_and_fit(limits) -> Caps:
    """Raise this process's soft RLIMIT_NOFILE toward the hard limit as far as `limits` need,
    then `fit` (the daemon, at start and after a reload that changed `limits`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = descriptors_needed(limits.max_connections, limits.max_handshakes)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        # Refused e.g. by a seccomp filter without setrlimit: fit what we have.
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return fit(limits, soft, hard)


def check(limits) -> str:
    """`medtls check`: a warning if a daemon started like this process could not raise its
    soft limit far enough (it may raise it up to the hard limit), else ""."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return fit(limits, hard, hard).warning
