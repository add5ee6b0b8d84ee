"""Is the system clock trustworthy enough to check certificate validity periods?

A Pi has no RTC: until NTP has synchronised, the clock may be years off and every
notBefore/notAfter check is meaningless. The decision is a plain function of the facts.
"""

from __future__ import annotations

import ctypes
import functools
import os
import time
from dataclasses import dataclass

STA_UNSYNC = 0x0040
TIME_ERROR = 5
# No certificate this software meets was valid before this instant (2025-01-01 UTC);
# clock.not_before in the config moves it, e.g. to the installation date of the box.
EARLIEST_PLAUSIBLE = 1735689600


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


@dataclass(frozen=True)
class ClockState:
    synchronized: bool
    source: str  # which fact decided
    detail: str


@dataclass(frozen=True)
class ClockFacts:
    now: float
    sync_file_exists: bool
    adjtimex_state: int | None  # return value of adjtimex(), None when unavailable
    adjtimex_status: int | None


def assess(facts: ClockFacts, earliest: float = EARLIEST_PLAUSIBLE) -> ClockState:
    if facts.now < earliest:
        when = time.strftime("%Y-%m-%d", time.gmtime(max(facts.now, 0)))
        limit = time.strftime("%Y-%m-%d", time.gmtime(earliest))
        return ClockState(False, "plausibility", f"system time {when} is before {limit}")
    if facts.sync_file_exists:
        return ClockState(True, "timesyncd", "systemd-timesyncd reports synchronized")
    if facts.adjtimex_state is None:
        return ClockState(False, "unknown", "kernel time status unavailable")
    if facts.adjtimex_state == TIME_ERROR or (facts.adjtimex_status or 0) & STA_UNSYNC:
        return ClockState(False, "kernel", "kernel reports clock unsynchronised (STA_UNSYNC)")
    return ClockState(True, "kernel", "kernel reports clock synchronised")


def validation_allowed(state: ClockState, require_sync: bool) -> tuple[bool, str]:
    """May certificates be validated now? (allowed, reason for log/status)."""
    if state.synchronized:
        return True, "clock synchronised"
    if not require_sync:
        return (
            True,
            f"clock NOT synchronised ({state.detail}); validating anyway (require_sync off)",
        )
    return False, f"clock not synchronised ({state.detail}); refusing certificate validation"


@functools.cache
def _libc():
    # The C library this process already runs on; ctypes.util.find_library("c") would spawn
    # `ldconfig -p` on every clock check (a fork of the serving process every few seconds).
    return ctypes.CDLL(None, use_errno=True)


def _adjtimex() -> tuple[int | None, int | None]:
    try:
        libc = _libc()
        tx = _Timex()
        ret = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None, None
    if ret < 0:
        return None, None
    return ret, tx.status


def read_facts(sync_file: str = "/run/systemd/timesync/synchronized") -> ClockFacts:
    state, status = _adjtimex()
    return ClockFacts(
        now=time.time(),
        sync_file_exists=os.path.exists(sync_file),
        adjtimex_state=state,
        adjtimex_status=status,
    )


def read_state(
    sync_file: str = "/run/systemd/timesync/synchronized", earliest: float = EARLIEST_PLAUSIBLE
) -> ClockState:
    return assess(read_facts(sync_file), earliest)
