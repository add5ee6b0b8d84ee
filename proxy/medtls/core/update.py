"""A/B updates with RAUC: what `rauc status` says, the update state file, and the health gate's
decision after a boot.

Three pure pieces and the two helpers of the small JSON state file:
- `parse_rauc_status`: the facts of `rauc status --detailed --output-format=json` (rauc 1.8 to
  1.16 print the same shape; newer keys are ignored, the keys read are type-checked). Outside
  input: bounded, strict, `RaucStatusError` naming the problem.
- `decide`: what `medtls update gate` does now, from those facts, the state file, the health
  checks and the time the gate has waited (`Action`).
- `status_line`: the line `medtls status` and the console print.
- `read_state`/`parse_state` (strict, bounded: used by the serving process for status and metrics)
  and `write_state` (atomic: the update process is the only writer).

Slots are named by their RAUC bootname (A, B): that is what U-Boot, the kernel command line
(`rauc.slot=`) and the technician see.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, replace

from medtls.core.statefile import read_capped, write_atomic

STATE_PATH = "/var/lib/medtls/update/state.json"
MAX_RAUC_STATUS_BYTES = 262144
MAX_STATE_BYTES = 16384
MAX_SLOTS = 16
MAX_TEXT = 256  # one name, version or timestamp from rauc
MAX_REASON = 500
OUTCOMES = ("pending", "committed", "fell_back")
ACTIONS = ("wait", "commit", "fall_back", "report_fallback", "nothing")
BOOT_STATUSES = ("good", "bad", "unknown")
SLOT_STATES = ("booted", "active", "inactive")
_MAX_TIME = 253402300799.0  # 9999-12-31
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_BOOT_ID = re.compile(r"[0-9a-f-]{1,64}")


class RaucStatusError(Exception):
    """`rauc status` output cannot be used; the message names the problem."""


class StateFileError(Exception):
    """The update state file cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------- rauc status


@dataclass(frozen=True)
class Slot:
    name: str  # rootfs.0
    slot_class: str  # rootfs
    bootname: str | None  # A
    state: str  # booted | active | inactive
    boot_status: str | None  # good | bad | unknown; None without a bootname
    version: str | None = None  # of the bundle last installed into it (RAUC's slot status)
    installed: str | None = None  # when, as rauc prints it (ISO 8601)


@dataclass(frozen=True)
class RaucFacts:
    compatible: str
    booted: str  # bootname of the booted slot
    primary: str | None  # bootname of the slot the bootloader tries first
    slots: tuple[Slot, ...]

    def slot(self, bootname: str) -> Slot | None:
        return next((s for s in self.slots if s.bootname == bootname), None)


def _unique_object(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k[:40]!r}")
        out[k] = v
    return out


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def _load_json(data: bytes, limit: int, where: str, error):
    if not isinstance(data, bytes | bytearray):
        raise error(f"{where}: not bytes")
    if len(data) > limit:
        raise error(f"{where}: larger than {limit} bytes")
    try:
        return json.loads(
            bytes(data).decode("utf-8"),
            object_pairs_hook=_unique_object,
            parse_constant=_reject_constant,
        )
    except UnicodeDecodeError:
        raise error(f"{where}: not UTF-8") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, duplicates, NaN, over-long integers
        raise error(f"{where}: not valid JSON: {e}") from None


def _text(v, what: str, optional: bool = False, limit: int = MAX_TEXT) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v or len(v) > limit or not _PRINTABLE.fullmatch(v):
        raise ValueError(f"{what}: must be a non-empty printable string of at most {limit} chars")
    return v


def _choice(v, what: str, options, optional: bool = False) -> str | None:
    if v is None and optional:
        return None
    if v not in options:
        raise ValueError(f"{what}: must be one of {', '.join(options)}, got {_show(v)}")
    return v


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _slot(entry, index: int) -> Slot:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ValueError(f"slots[{index}]: must be an object with one slot name")
    ((name, body),) = entry.items()
    name = _text(name, f"slots[{index}] name")
    where = f"slot {name}"
    if not isinstance(body, dict):
        raise ValueError(f"{where}: must be an object")
    version = installed = None
    status = body.get("slot_status")
    if status is not None:
        if not isinstance(status, dict):
            raise ValueError(f"{where}: slot_status must be an object")
        bundle = status.get("bundle")
        if bundle is not None:
            if not isinstance(bundle, dict):
                raise ValueError(f"{where}: slot_status.bundle must be an object")
            version = _text(bundle.get("version"), f"{where}: bundle version", optional=True)
        stamp = status.get("installed")
        if stamp is not None:
            if not isinstance(stamp, dict):
                raise ValueError(f"{where}: slot_status.installed must be an object")
            installed = _text(stamp.get("timestamp"), f"{where}: installed timestamp", True)
    bootname = _text(body.get("bootname"), f"{where}: bootname", optional=True)
    boot_status = _choice(body.get("boot_status"), f"{where}: boot_status", BOOT_STATUSES, True)
    if bootname is not None and boot_status is None:
        raise ValueError(f"{where}: boot_status missing for a slot with a bootname")
    return Slot(
        name=name,
        slot_class=_text(body.get("class"), f"{where}: class"),
        bootname=bootname,
        state=_choice(body.get("state"), f"{where}: state", SLOT_STATES),
        boot_status=boot_status,
        version=version,
        installed=installed,
    )


def parse_rauc_status(data: bytes) -> RaucFacts:
    """The facts of `rauc status --detailed --output-format=json`; RaucStatusError otherwise."""
    where = "rauc status"
    raw = _load_json(data, MAX_RAUC_STATUS_BYTES, where, RaucStatusError)
    if not isinstance(raw, dict):
        raise RaucStatusError(f"{where}: must be a JSON object")
    try:
        compatible = _text(raw.get("compatible"), "compatible")
        slots_raw = raw.get("slots")
        if not isinstance(slots_raw, list) or not 1 <= len(slots_raw) <= MAX_SLOTS:
            raise ValueError(f"slots: must be a list of 1-{MAX_SLOTS} slots")
        slots = tuple(_slot(entry, i) for i, entry in enumerate(slots_raw))
        names = [s.name for s in slots]
        bootnames = [s.bootname for s in slots if s.bootname is not None]
        for seen in (names, bootnames):
            dup = next((n for n in seen if seen.count(n) > 1), None)
            if dup is not None:
                raise ValueError(f"slots: {dup!r} appears twice")
        booted = [s for s in slots if s.state == "booted"]
        if len(booted) != 1 or booted[0].bootname is None:
            raise ValueError(
                "no booted slot with a bootname (is rauc.slot= on the kernel command line?)"
                if not booted
                else "more than one booted slot"
                if len(booted) > 1
                else f"the booted slot {booted[0].name} has no bootname"
            )
        named = _text(raw.get("booted"), "booted", optional=True)
        if named not in (None, booted[0].bootname, booted[0].name):
            raise ValueError(f"booted: {named!r} is not the slot in state booted")
        primary_name = _text(raw.get("boot_primary"), "boot_primary", optional=True)
        primary = None
        if primary_name is not None:
            match = next((s for s in slots if s.name == primary_name), None)
            if match is None:
                raise ValueError(f"boot_primary: {primary_name!r} is not a slot")
            primary = match.bootname
    except ValueError as e:
        raise RaucStatusError(f"{where}: {e}") from None
    return RaucFacts(compatible, booted[0].bootname, primary, slots)


@dataclass(frozen=True)
class BundleInfo:
    compatible: str
    version: str


def parse_bundle_info(data: bytes) -> BundleInfo:
    """compatible and version of `rauc info --output-format=json` (after rauc verified the
    signature); RaucStatusError otherwise."""
    where = "rauc info"
    raw = _load_json(data, MAX_RAUC_STATUS_BYTES, where, RaucStatusError)
    if not isinstance(raw, dict):
        raise RaucStatusError(f"{where}: must be a JSON object")
    try:
        return BundleInfo(
            _text(raw.get("compatible"), "compatible"), _text(raw.get("version"), "version")
        )
    except ValueError as e:
        raise RaucStatusError(f"{where}: {e}") from None


# --------------------------------------------------------------------------- the state file


@dataclass(frozen=True)
class UpdateState:
    outcome: str  # pending | committed | fell_back
    slot: str  # bootname installed into
    previous: str  # bootname booted at install time (what a fallback returns to)
    version: str  # the bundle's version
    installed_at: float
    install_boot_id: str  # the gate waits for a boot other than this one
    outcome_at: float | None = None
    reason: str | None = None  # why it fell back
    fallbacks: int = 0  # fallbacks over the box's life (medtls_update_fallbacks_total)


_FIELDS = {
    "outcome": lambda v: _choice(v, "outcome", OUTCOMES),
    "slot": lambda v: _text(v, "slot", limit=64),
    "previous": lambda v: _text(v, "previous", limit=64),
    "version": lambda v: _text(v, "version"),
    "installed_at": lambda v: _time(v, "installed_at"),
    "install_boot_id": lambda v: _boot_id(v),
    "outcome_at": lambda v: None if v is None else _time(v, "outcome_at"),
    "reason": lambda v: _text(v, "reason", optional=True, limit=MAX_REASON),
    "fallbacks": lambda v: _count(v),
}
_REQUIRED = ("outcome", "slot", "previous", "version", "installed_at", "install_boot_id")


def _time(v, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key}: must be a number of seconds, got {type(v).__name__}")
    if not 0 <= v <= _MAX_TIME:
        raise ValueError(f"{key}: time out of range")
    return float(v)


def _boot_id(v) -> str:
    if not isinstance(v, str) or not _BOOT_ID.fullmatch(v):
        raise ValueError("install_boot_id: must be a boot id (hex and dashes)")
    return v


def _count(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1_000_000:
        raise ValueError("fallbacks: must be an integer 0-1000000")
    return v


def parse_state(data: bytes, where: str = "state.json") -> UpdateState:
    """An UpdateState from the bytes of the state file; StateFileError for anything else."""
    raw = _load_json(data, MAX_STATE_BYTES, where, StateFileError)
    if not isinstance(raw, dict):
        raise StateFileError(f"{where}: must be a JSON object")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise StateFileError(f"{where}: unknown key {unknown[0][:40]!r}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise StateFileError(f"{where}: {missing[0]} missing")
    try:
        values = {k: _FIELDS[k](v) for k, v in raw.items()}
    except ValueError as e:
        raise StateFileError(f"{where}: {e}") from None
    return UpdateState(**values)


def read_state(path=STATE_PATH) -> UpdateState | None:
    """The state in `path`, None when no update was ever installed; StateFileError otherwise."""
    data = read_capped(path, MAX_STATE_BYTES, StateFileError)
    return None if data is None else parse_state(data, str(path))


def state_json(state: UpdateState) -> str:
    return json.dumps(asdict(state), indent=1, sort_keys=True, allow_nan=False) + "\n"


def write_state(path, state: UpdateState) -> None:
    """Write `state` atomically (the update process is the only writer)."""
    write_atomic(path, state_json(state))


def clip(text: str, limit: int = MAX_REASON) -> str:
    """`text` on one printable line of at most `limit` characters (reasons come from outputs)."""
    text = "".join(ch if 0x20 <= ord(ch) <= 0x7E else " " for ch in str(text))
    text = " ".join(text.split()) or "?"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def installed(
    previous: UpdateState | None, slot: str, booted: str, version: str, now: float, boot_id: str
) -> UpdateState:
    """The state after `rauc install` wrote `version` into `slot` while `booted` ran."""
    return UpdateState(
        outcome="pending",
        slot=slot,
        previous=booted,
        version=clip(version, MAX_TEXT),
        installed_at=float(now),
        install_boot_id=boot_id,
        fallbacks=previous.fallbacks if previous else 0,
    )


def committed(state: UpdateState, now: float) -> UpdateState:
    return replace(state, outcome="committed", outcome_at=float(now), reason=None)


def fell_back(state: UpdateState, now: float, reason: str) -> UpdateState:
    return replace(
        state,
        outcome="fell_back",
        outcome_at=float(now),
        reason=clip(reason),
        fallbacks=min(state.fallbacks + 1, 1_000_000),
    )


# --------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class Checks:
    """What the gate found: None for a check that passed (or is not configured), else the
    problem in words."""

    serving: str | None = None
    ruleset: str | None = None
    probe: str | None = None

    def problems(self) -> list[str]:
        return [p for p in (self.serving, self.ruleset, self.probe) if p]


@dataclass(frozen=True)
class Action:
    kind: str  # one of ACTIONS
    reason: str
    slot: str | None = None  # the slot it concerns (bootname)


def decide(
    facts: RaucFacts,
    state: UpdateState | None,
    checks: Checks | None,
    elapsed: float,
    timeout: float,
    boot_id: str,
) -> Action:
    """What the gate does now. `checks` None: not run yet (the gate runs them only when an
    installed slot is on trial). `elapsed`: seconds the gate has been waiting in this boot."""
    booted = facts.booted
    if state is None or state.outcome != "pending":
        return Action("nothing", "no update pending", booted)
    if state.install_boot_id == boot_id:
        return Action("nothing", f"slot {state.slot} installed; reboot to start it", state.slot)
    if booted != state.slot:
        new = facts.slot(state.slot)
        if new is not None and new.boot_status == "bad":
            why = f"slot {state.slot} was marked bad (its boot attempts ran out)"
        else:
            why = f"slot {state.slot} did not boot"
        return Action("report_fallback", f"{why}; booted {booted}", state.slot)
    if checks is None:
        return Action("wait", "checks not run yet", booted)
    problems = checks.problems()
    if not problems:
        return Action("commit", f"slot {booted} healthy", booted)
    if elapsed >= timeout:
        return Action(
            "fall_back",
            f"not healthy {elapsed:.0f} s after boot: {'; '.join(problems)}",
            booted,
        )
    return Action("wait", "; ".join(problems), booted)


# --------------------------------------------------------------------------- reporting


def _stamp(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def status_line(state: UpdateState | None) -> tuple[bool, str] | None:
    """(is_warning, line) for `medtls status`; None when no update was ever installed."""
    if state is None:
        return None
    if state.outcome == "committed":
        return False, (
            f"update: slot {state.slot} committed, version {state.version}, "
            f"{_stamp(state.outcome_at)}"
        )
    if state.outcome == "fell_back":
        return True, (
            f"update: FELL BACK to {state.previous} at {_stamp(state.outcome_at)}: "
            f"{state.reason or '?'} (version {state.version} in slot {state.slot} not used)"
        )
    return False, (
        f"update: version {state.version} installed into slot {state.slot} at "
        f"{_stamp(state.installed_at)}, waiting for the reboot and the health gate"
    )


def status_dict(state: UpdateState | None) -> dict | None:
    return None if state is None else asdict(state)
