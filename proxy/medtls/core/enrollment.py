"""ACME enrollment: the state of the box's certificate life cycle and the decisions about it.

Pure functions over an `EnrollmentState` (when to renew, how long to back off, what to do now),
plus the two helpers of the small JSON state file ``<state_dir>/state.json``: `write_state`
(atomic) by the enroll process, `read_state` (strict) by it and by `medtls status`/metrics in the
serving process. The file is outside input like any other: a corrupt or hostile one gives a
`StateFileError` naming the file and the problem, never a traceback.

Times are POSIX seconds (float). `rng` is a `random.Random` (tests pass a seeded one).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, replace

from medtls.core.statefile import read_capped, write_atomic

PHASES = ("enrolling", "valid", "renewing", "failed", "expired")
ACTIONS = ("enroll", "renew", "wait")
STATE_FILE = "state.json"
MAX_STATE_BYTES = 65536
MAX_ERROR_CHARS = 1000
# Back-off after a failed attempt: 1 min, 2, 4, ... capped at 4 h, each drawn from [1/2, 1] of
# the step so that a fleet that failed together does not retry together.
RETRY_BASE = 60.0
RETRY_CAP = 4 * 3600.0
# Renewal starts at a point drawn from [renew_at - RENEW_JITTER, renew_at] of the lifetime:
# never later than configured, so "renewal overdue" (ops.health) stays a fixed fraction.
RENEW_JITTER = 0.04


class StateFileError(Exception):
    """state.json cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class EnrollmentState:
    phase: str = "enrolling"
    serial: str | None = None  # hex, of the installed certificate
    not_before: float | None = None
    not_after: float | None = None
    next_renewal: float | None = None  # the next attempt (renewal or retry) is due at
    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str | None = None  # of the last attempt; None after a success
    attempts: int = 0  # failed attempts since the last success
    ari_window: tuple[float, float] | None = None  # RFC 9773 suggestedWindow (start, end)


@dataclass(frozen=True)
class Decision:
    action: str  # enroll | renew | wait
    at: float  # when the action is due (now for enroll/renew)
    reason: str


# --------------------------------------------------------------------------- decisions


def renewal_time(not_before, not_after, renew_at, ari_window, rng) -> float:
    """When to renew a certificate valid from `not_before` to `not_after`: at `renew_at` of its
    lifetime minus up to RENEW_JITTER of it, or earlier at a random point of the CA's ARI window
    (RFC 9773 §4.2) when that starts earlier. Never before not_before unless the window is."""
    for v in (not_before, not_after, renew_at):
        if not math.isfinite(v):
            raise ValueError(f"not a finite time: {v!r}")
    lifetime = not_after - not_before
    if lifetime <= 0:
        return float(not_before)
    fraction = max(0.0, renew_at - RENEW_JITTER * rng.random())
    at = not_before + lifetime * fraction
    if ari_window is not None:
        start, end = ari_window
        if math.isfinite(start) and math.isfinite(end) and start <= end:
            at = min(at, start + (end - start) * rng.random())
    return float(at)


def retry_delay(attempts: int, rng) -> float:
    """Seconds to wait after the `attempts`-th consecutive failure (>= 1): capped exponential
    back-off with jitter."""
    step = RETRY_CAP if attempts > 20 else min(RETRY_CAP, RETRY_BASE * 2 ** max(0, attempts - 1))
    return step * (0.5 + 0.5 * rng.random())


def current_phase(state: EnrollmentState, now: float) -> str:
    """The phase as of `now`: a state written as valid is expired once not_after passed."""
    if state.serial is None or state.not_after is None:
        return "enrolling"
    if state.not_after <= now:
        return "expired"
    if state.attempts > 0:
        return "failed"
    if state.next_renewal is not None and now >= state.next_renewal:
        return "renewing"
    return "valid"


def decide(state: EnrollmentState | None, now: float, has_certificate: bool) -> Decision:
    """What the enroll run does now. `has_certificate`: a certificate is installed (live)."""
    if state is None:
        if has_certificate:
            return Decision("renew", now, "a certificate is installed but no enrollment state")
        return Decision("enroll", now, "no certificate yet")
    due = state.next_renewal
    if due is not None and now < due:
        why = f"back-off after {state.attempts} failed attempt(s)" if state.attempts else "valid"
        return Decision("wait", due, why)
    if not has_certificate:
        return Decision("enroll", now, "no certificate yet")
    if state.not_after is not None and state.not_after <= now:
        return Decision("enroll", now, "the certificate has expired")
    if due is None:
        return Decision("renew", now, "no renewal time recorded")
    return Decision("renew", now, "renewal is due")


def succeeded(now, serial, not_before, not_after, renew_at, ari_window, rng) -> EnrollmentState:
    """The state after a certificate was issued and installed."""
    return EnrollmentState(
        phase="valid",
        serial=serial,
        not_before=float(not_before),
        not_after=float(not_after),
        next_renewal=renewal_time(not_before, not_after, renew_at, ari_window, rng),
        last_attempt=float(now),
        last_success=float(now),
        last_error=None,
        attempts=0,
        ari_window=ari_window,
    )


def failed(state: EnrollmentState | None, now: float, error: str, rng) -> EnrollmentState:
    """The state after a failed attempt: the installed certificate (if any) is kept, the next
    attempt backs off."""
    state = state or EnrollmentState()
    attempts = min(state.attempts + 1, 1_000_000)
    new = replace(
        state,
        last_attempt=float(now),
        last_error=_clip(error),
        attempts=attempts,
        next_renewal=float(now) + retry_delay(attempts, rng),
    )
    return replace(new, phase=current_phase(new, now))


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


# --------------------------------------------------------------------------- the state file

_FIELDS = {
    "phase": "phase",
    "serial": "serial",
    "not_before": "time",
    "not_after": "time",
    "next_renewal": "time",
    "last_attempt": "time",
    "last_success": "time",
    "last_error": "text",
    "attempts": "count",
    "ari_window": "window",
}
_SERIAL = re.compile(r"[0-9a-f]{1,64}")
_MAX_TIME = 253402300799.0  # 9999-12-31


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def _unique_object(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _time(v, key):
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key}: must be a number of seconds, got {type(v).__name__}")
    v = float(v)
    if not 0 <= v <= _MAX_TIME:
        raise ValueError(f"{key}: time out of range: {v!r}")
    return v


def _field(key: str, v):
    if v is None:
        if key in ("phase", "attempts"):
            raise ValueError(f"{key}: must not be null")
        return None
    kind = _FIELDS[key]
    if kind == "phase":
        if v not in PHASES:
            raise ValueError(f"phase: must be one of {', '.join(PHASES)}")
        return v
    if kind == "serial":
        if not isinstance(v, str) or not _SERIAL.fullmatch(v):
            raise ValueError("serial: must be 1-64 lower-case hex digits")
        return v
    if kind == "time":
        return _time(v, key)
    if kind == "text":
        if not isinstance(v, str) or len(v) > MAX_ERROR_CHARS:
            raise ValueError(f"last_error: must be a string of at most {MAX_ERROR_CHARS} chars")
        return v
    if kind == "count":
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1_000_000:
            raise ValueError("attempts: must be an integer 0-1000000")
        return v
    if not isinstance(v, list) or len(v) != 2:
        raise ValueError("ari_window: must be [start, end] or null")
    start, end = _time(v[0], "ari_window"), _time(v[1], "ari_window")
    if start > end:
        raise ValueError("ari_window: start is after end")
    return (start, end)


def parse_state(data: bytes, where: str = "state.json") -> EnrollmentState:
    """An EnrollmentState from the bytes of a state file; StateFileError for anything else."""
    if len(data) > MAX_STATE_BYTES:
        raise StateFileError(f"{where}: larger than {MAX_STATE_BYTES} bytes")
    try:
        raw = json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_object, parse_constant=_reject_constant
        )
    except UnicodeDecodeError:
        raise StateFileError(f"{where}: not UTF-8") from None
    except RecursionError:
        raise StateFileError(f"{where}: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, duplicates, NaN, over-long integers
        raise StateFileError(f"{where}: not a valid state file: {e}") from None
    if not isinstance(raw, dict):
        raise StateFileError(f"{where}: must be a JSON object")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise StateFileError(f"{where}: unknown key {unknown[0][:40]!r}")
    try:
        values = {k: _field(k, v) for k, v in raw.items()}
    except ValueError as e:
        raise StateFileError(f"{where}: {e}") from None
    if "phase" not in values:
        raise StateFileError(f"{where}: phase missing")
    return EnrollmentState(**values)


def read_state(path) -> EnrollmentState | None:
    """The state in `path`, None when there is none yet; StateFileError when it is unusable."""
    data = read_capped(path, MAX_STATE_BYTES, StateFileError)
    return None if data is None else parse_state(data, str(path))


def state_json(state: EnrollmentState) -> str:
    d = asdict(state)
    d["ari_window"] = list(state.ari_window) if state.ari_window is not None else None
    return json.dumps(d, indent=1, sort_keys=True, allow_nan=False) + "\n"


def write_state(path, state: EnrollmentState) -> None:
    """Write `state` to `path` atomically (temporary file in the same directory, fsync, rename):
    a reader sees the old or the new state, never a half-written one."""
    write_atomic(path, state_json(state))
