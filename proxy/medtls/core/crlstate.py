"""The result of the last `medtls crl-fetch`: a small JSON file the fetcher writes and
`medtls status` reads (no I/O here but the state file helpers)."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medtls.core.statefile import read_capped, write_atomic

MAX_STATE_BYTES = 1 << 20
RESULTS = ("installed", "unchanged", "refused", "failed")


@dataclass(frozen=True)
class UrlResult:
    url: str
    result: str  # installed | unchanged (the installed CRL is as new) | refused | failed
    detail: str = ""  # why refused/failed; the CA it belongs to otherwise
    next_update: float | None = None  # of the CRL fetched from this URL, when it was readable


@dataclass(frozen=True)
class CrlFetchState:
    last_fetch: float  # epoch seconds
    urls: tuple[UrlResult, ...] = ()
    next_update: float | None = None  # the earliest nextUpdate in the installed trust.crl
    reload: str = ""  # what the daemon said to the reload ("" when nothing was installed)
    errors: tuple[str, ...] = field(default_factory=tuple)  # problems not tied to one URL

    @property
    def ok(self) -> bool:
        return not self.errors and all(u.result in ("installed", "unchanged") for u in self.urls)


class StateError(ValueError):
    pass


def write_state(path: str | os.PathLike, state: CrlFetchState) -> None:
    """Atomically, mode 0644."""
    write_atomic(path, json.dumps(asdict(state), indent=1, sort_keys=True) + "\n")


def _num(v: object, what: str) -> float | None:
    if v is None:
        return None
    try:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise OverflowError
        return float(v)
    except OverflowError:
        raise StateError(f"{what} is not a number") from None


def _text(v: object, what: str) -> str:
    if not isinstance(v, str):
        raise StateError(f"{what} is not a string")
    return v[:500]


def read_state(path: str | os.PathLike) -> CrlFetchState | None:
    """The state, None if there is none yet; StateError naming the file and the problem."""
    p = Path(path)
    data = read_capped(p, MAX_STATE_BYTES, StateError)
    if data is None:
        return None
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"{p}: larger than {MAX_STATE_BYTES} bytes")
    try:
        return parse_state(data)
    except StateError as e:
        raise StateError(f"{p}: {e}") from None


def parse_state(data: bytes) -> CrlFetchState:
    """The state in `data` (the file's bytes); StateError saying what is wrong."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise StateError(f"not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise StateError("not a JSON object")
    urls = raw.get("urls", [])
    errors = raw.get("errors", [])
    if not isinstance(urls, list) or not isinstance(errors, list):
        raise StateError("urls and errors must be lists")
    results = []
    for i, u in enumerate(urls[:1000]):
        if not isinstance(u, dict):
            raise StateError(f"urls[{i}] is not an object")
        result = _text(u.get("result"), f"urls[{i}].result")
        if result not in RESULTS:
            raise StateError(f"urls[{i}].result: unknown result {result[:40]!r}")
        results.append(UrlResult(
            _text(u.get("url"), f"urls[{i}].url"), result,
            _text(u.get("detail", ""), f"urls[{i}].detail"),
            _num(u.get("next_update"), f"urls[{i}].next_update"),
        ))  # fmt: skip
    last = _num(raw.get("last_fetch"), "last_fetch")
    if last is None:
        raise StateError("last_fetch missing")
    return CrlFetchState(
        last, tuple(results), _num(raw.get("next_update"), "next_update"),
        _text(raw.get("reload", ""), "reload"),
        tuple(_text(e, "errors[]") for e in errors[:100]),
    )  # fmt: skip


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def summary(state: CrlFetchState | None) -> str:
    """One line for `medtls status`."""
    if state is None:
        return "crl fetch: not run yet"
    good = sum(u.result in ("installed", "unchanged") for u in state.urls)
    line = f"crl fetch: last {_when(state.last_fetch)}, {good}/{len(state.urls)} URLs ok"
    if state.next_update is not None:
        line += f", next update due {_when(state.next_update)}"
    bad = [f"{u.url}: {u.result}: {u.detail}" for u in state.urls if u.result in RESULTS[2:]]
    problems = [*state.errors, *bad]
    if problems:
        line += f"; {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
    return line
