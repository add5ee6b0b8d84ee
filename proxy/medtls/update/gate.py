"""`medtls update gate`: after a boot, commit a freshly installed slot once it is healthy, or
fall back to the previous one; report a fallback that happened before Linux came up.

The decision is `medtls.core.update.decide`; this module gathers its inputs (rauc status, the
state file, the checks, the time waited) and performs the action it returns."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from medtls.core import update as core

from . import rauc

REBOOT = "systemctl reboot"
INTERVAL = 5.0


@dataclasses.dataclass
class Settings:
    config: str  # medtls.yaml
    state: str = core.STATE_PATH
    rauc_conf: str | None = None  # rauc's own default (/etc/rauc/system.conf) when None
    timeout: float = 300.0
    probe: str | None = None
    reboot: str = REBOOT
    interval: float = INTERVAL
    boot_id_path: str = rauc.BOOT_ID
    python: str = sys.executable


def update_section(config_path: str) -> dict:
    """`update:` of the configuration file, parsed by the schema (defaults where absent)."""
    import yaml

    from medtls.config.schema import SCHEMA, ConfigError, Reader

    with open(config_path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    section = raw.get("update") if isinstance(raw, dict) else None
    r = Reader(Path(config_path).resolve().parent, check_files=False)
    v = r.value(SCHEMA.keys["update"], section or {}, "update")
    if r.problems:
        raise ConfigError(r.problems)
    return dict(v)


# ----------------------------------------------------------------------------- checks


def check_serving(config, socket_path: str) -> str | None:
    """None when the daemon answers on its control socket, ready, with listeners open."""
    from medtls.ops import control

    try:
        status = control.request(socket_path, "status", timeout=10)
    except control.ControlError as e:
        return f"medtls does not answer: {e}"
    if not status.get("ok"):
        return f"medtls answered: {status.get('error')}"
    if status.get("draining"):
        return "medtls is stopping"
    if not status.get("ready"):
        return "medtls is not ready (listeners or TLS material not loaded)"
    if not status.get("listeners"):
        return "medtls has no listener open"
    for w in status.get("workers") or []:
        if w.get("error") or not w.get("ready"):
            return f"medtls worker {w.get('index')} is not ready"
    return None


def check_ruleset(config) -> str | None:
    """In transparent mode both owned nftables tables must be loaded (else the bridge is
    closed, not open: the box would be useless, not unsafe)."""
    if config.mode != "transparent":
        return None
    from medtls.interception import host, ruleset

    try:
        loaded = host.status()
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot list the nftables ruleset: {e}"
    missing = [
        f"{family} {ruleset.TABLE_NAME}"
        for family in ("bridge", "inet")
        if f"table {family} {ruleset.TABLE_NAME} " not in loaded
    ]
    return f"interception ruleset not loaded (table {', '.join(missing)})" if missing else None


def check_probe(settings: Settings) -> str | None:
    if not settings.probe:
        return None
    cmd = [settings.python, "-m", "medtls", "probe", settings.probe, "--config", settings.config]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return f"probe of {settings.probe} did not finish in 60 s"
    if proc.returncode == 0:
        return None
    text = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip().splitlines()
    return (
        f"probe of {settings.probe} failed: {core.clip(text[-1] if text else proc.returncode, 200)}"
    )


def run_checks(settings: Settings, config) -> core.Checks:
    return core.Checks(
        serving=check_serving(config, config.ops.control.socket),
        ruleset=check_ruleset(config),
        probe=check_probe(settings),
    )


# ----------------------------------------------------------------------------- reporting


def audit(config, state_dir: Path, success: bool, event: str, what: str, detail: str) -> None:
    """One Software Configuration audit message (`update_committed` / `update_fell_back`),
    sent through the configured trail; kept in this process's own spool when the repository is
    unreachable (the next gate run sends it first)."""
    from medtls.ops.auditing import Auditor

    cfg = config.ops.audit
    if cfg.transport == "none":
        return
    spool = "off" if cfg.spool == "off" else str(state_dir / "audit.spool")
    auditor = Auditor(dataclasses.replace(cfg, spool=spool), config.device.ip or "")
    auditor.start()
    auditor.configuration_change(success, what, f"{event}: {detail}", security=False)
    auditor.stop(flush_timeout=5.0)


def _load_config(path: str):
    from medtls.config import load_config

    return load_config(path, check_files=False)


def gate(settings: Settings, log: Callable[[str], None] = print) -> int:
    """0: committed, nothing to do; 1: fell back (or found a fallback); 2: cannot decide."""
    from medtls.config import ConfigError

    state_path = Path(settings.state)
    try:
        facts = rauc.status(settings.rauc_conf)
        state = core.read_state(state_path)
        boot_id = rauc.boot_id(settings.boot_id_path)
    except (rauc.RaucError, core.RaucStatusError, core.StateFileError, OSError) as e:
        log(f"medtls update gate: cannot decide: {e}")
        return 2
    config = None
    started = time.monotonic()
    checks = None
    while True:
        action = core.decide(
            facts, state, checks, time.monotonic() - started, settings.timeout, boot_id
        )
        if action.kind != "wait":
            break
        if checks is not None:
            log(f"medtls update gate: slot {facts.booted} not healthy yet: {action.reason}")
            time.sleep(settings.interval)
        if config is None:
            try:
                config = _load_config(settings.config)
            except ConfigError as e:
                checks = core.Checks(serving=f"{settings.config}: {e.problems[0]}")
                continue
        checks = run_checks(settings, config)
    return perform(settings, facts, state, action, config, log)


def perform(settings, facts, state, action, config, log) -> int:
    from medtls.config import ConfigError

    state_path = Path(settings.state)
    now = time.time()
    if config is None and action.kind != "nothing":
        try:
            config = _load_config(settings.config)
        except (ConfigError, OSError):
            config = None  # the audit needs it; the decision does not
    booted = facts.slot(facts.booted)
    if action.kind == "nothing":
        # The boot script counted this boot against the slot's attempts: a running, committed
        # slot gets them back (what rauc-mark-good.service does on other systems).
        _rauc_quiet(["status", "mark-good", "booted"], settings, log)
        log(f"medtls update gate: slot {facts.booted}: {action.reason}")
        return 0
    if action.kind == "commit":
        try:
            rauc.run(["status", "mark-good", "booted"], settings.rauc_conf)
        except rauc.RaucError as e:
            log(f"medtls update gate: cannot mark slot {facts.booted} good: {e}")
            return 2
        new = core.committed(state, now)
        core.write_state(state_path, new)
        detail = f"slot {new.slot} committed, version {new.version}"
        log(f"medtls update gate: {detail}")
        _audit(config, state_path, True, "update_committed", booted, detail, log)
        return 0
    # fall_back (this boot of the new slot is unhealthy) or report_fallback (it never came up)
    new = core.fell_back(state, now, action.reason)
    core.write_state(state_path, new)
    detail = f"fell back to slot {new.previous}: {new.reason}"
    log(f"medtls update gate: FELL BACK: {detail}")
    if action.kind == "report_fallback":
        failed = facts.slot(state.slot)
        if failed is not None:  # never tried again, even if the attempt counters are reset
            _rauc_quiet(["status", "mark-bad", failed.name], settings, log)
        _rauc_quiet(["status", "mark-good", "booted"], settings, log)
        _audit(config, state_path, False, "update_fell_back", booted, detail, log)
        return 1
    _audit(config, state_path, False, "update_fell_back", booted, detail, log)
    try:
        rauc.run(["status", "mark-bad", "booted"], settings.rauc_conf)
    except rauc.RaucError as e:
        log(f"medtls update gate: cannot mark slot {facts.booted} bad: {e}; rebooting anyway")
    log(f"medtls update gate: rebooting into slot {state.previous}")
    subprocess.run(shlex.split(settings.reboot), check=False)
    return 1


def _rauc_quiet(args, settings, log) -> None:
    try:
        rauc.run(args, settings.rauc_conf)
    except rauc.RaucError as e:
        log(f"medtls update gate: rauc {' '.join(args)}: {e}")


def _audit(config, state_path, success, event, slot, detail, log) -> None:
    if config is None:
        log(f"medtls update gate: {event} not audited: the configuration is unreadable")
        return
    what = f"rauc slot {slot.name} ({slot.bootname})" if slot else "rauc slot"
    try:
        audit(config, state_path.parent, success, event, what, detail)
    except Exception as e:  # the outcome is recorded in the state file either way
        log(f"medtls update gate: {event} not audited: {e}")


def install(
    bundle: str,
    state: str = core.STATE_PATH,
    rauc_conf: str | None = None,
    keyring: str = rauc.KEYRING,
    boot_id_path: str = rauc.BOOT_ID,
    log: Callable[[str], None] = print,
) -> int:
    """Check the bundle's signature against the box's keyring, then install it into the other
    slot and record the install. 0 installed, 1 refused or failed (no slot touched when the
    check refuses)."""
    if not os.path.isfile(bundle):
        log(f"medtls update install: {bundle}: no such file")
        return 1
    try:
        info = core.parse_bundle_info(
            rauc.run(
                ["info", f"--keyring={keyring}", "--output-format=json", bundle], rauc_conf
            ).encode("utf-8")
        )
    except (rauc.RaucError, core.RaucStatusError) as e:
        log(
            f"medtls update install: REFUSED {bundle}: its signature does not verify against "
            f"the keyring {keyring} (nothing was installed): {e}"
        )
        return 1
    try:
        before = rauc.status(rauc_conf)
        previous = _previous_state(state)
        log(f"medtls update install: installing version {info.version} ({bundle})")
        rauc.run(["install", bundle], rauc_conf, timeout=3600)
        after = rauc.status(rauc_conf)
    except (rauc.RaucError, core.RaucStatusError) as e:
        log(f"medtls update install: FAILED: {e}")
        return 1
    target = after.primary if after.primary and after.primary != after.booted else None
    if target is None:
        target = next(
            (s.bootname for s in after.slots if s.bootname and s.bootname != after.booted), "?"
        )
    record = core.installed(
        previous, target, before.booted, info.version, time.time(), rauc.boot_id(boot_id_path)
    )
    core.write_state(state, record)
    log(
        f"medtls update install: version {info.version} installed into slot {target}; "
        "reboot to start it (the health gate commits it or falls back to slot "
        f"{before.booted})"
    )
    return 0


def _previous_state(path: str):
    try:
        return core.read_state(path)
    except core.StateFileError:
        return None
