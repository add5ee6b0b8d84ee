"""`medtls update gate|status|install` (its own process: medtls-update-gate.service, or a
technician at the console)."""

from __future__ import annotations

import json
import sys

from medtls.core import update as core

DEFAULT_CONFIG = "/etc/medtls/medtls.yaml"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "update",
        help="A/B updates: install a signed bundle, the health gate, the update status",
        description="Install a RAUC bundle into the other slot, commit or fall back after the "
        "reboot (the health gate, run by medtls-update-gate.service), show what happened.",
    )
    sub = p.add_subparsers(dest="update_command", metavar="ACTION", required=True)

    def common(q) -> None:
        q.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
        q.add_argument("--state", default=core.STATE_PATH, help=f"default {core.STATE_PATH}")
        q.add_argument("--rauc-conf", help="rauc's system.conf (default: rauc's own)")

    q = sub.add_parser("gate", help="commit the booted slot when healthy, or fall back")
    common(q)
    q.add_argument("--reboot-command", default="systemctl reboot", help="how to reboot")
    q.add_argument("--interval", type=float, default=5.0, help="seconds between checks")
    q.add_argument("--timeout", type=float, help="override update.gate_timeout (seconds)")
    q.add_argument(
        "--boot-id-file", default="/proc/sys/kernel/random/boot_id", help=argparse_hidden()
    )
    q.set_defaults(func=cmd_gate)

    q = sub.add_parser("status", help="the last install and its outcome")
    common(q)
    q.add_argument("--json", action="store_true", help="print the state and rauc's slots as JSON")
    q.set_defaults(func=cmd_status)

    q = sub.add_parser("install", help="check a bundle's signature, then install it")
    common(q)
    q.add_argument("bundle", metavar="FILE", help="the .raucb bundle")
    q.add_argument("--keyring", default="/etc/rauc/keyring.pem", help="default %(default)s")
    q.add_argument(
        "--boot-id-file", default="/proc/sys/kernel/random/boot_id", help=argparse_hidden()
    )
    q.set_defaults(func=cmd_install)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


def _log(line: str) -> None:
    print(line, flush=True)


def cmd_gate(args) -> int:
    from medtls.config import ConfigError

    from .gate import Settings, gate, update_section

    try:
        section = update_section(args.config)
    except (ConfigError, OSError) as e:
        problems = getattr(e, "problems", None) or [getattr(e, "strerror", None) or e]
        print(f"medtls update gate: {args.config}: {problems[0]}", file=sys.stderr)
        section = {"gate_timeout": 300.0, "gate_probe": None}  # the gate must still decide
    settings = Settings(
        config=args.config,
        state=args.state,
        rauc_conf=args.rauc_conf,
        timeout=args.timeout if args.timeout is not None else section["gate_timeout"],
        probe=section.get("gate_probe"),
        reboot=args.reboot_command,
        interval=args.interval,
        boot_id_path=args.boot_id_file,
    )
    return gate(settings, _log)


def cmd_install(args) -> int:
    from .gate import install

    return install(args.bundle, args.state, args.rauc_conf, args.keyring, args.boot_id_file, _log)


def cmd_status(args) -> int:
    from . import rauc

    try:
        state = core.read_state(args.state)
        state_error = None
    except core.StateFileError as e:
        state, state_error = None, str(e)
    try:
        facts, rauc_error = rauc.status(args.rauc_conf), None
    except (rauc.RaucError, core.RaucStatusError) as e:
        facts, rauc_error = None, str(e)
    if args.json:
        out = {
            "state": core.status_dict(state),
            "state_error": state_error,
            "rauc_error": rauc_error,
            "booted": facts.booted if facts else None,
            "primary": facts.primary if facts else None,
            "slots": [
                {
                    "name": s.name,
                    "bootname": s.bootname,
                    "state": s.state,
                    "boot_status": s.boot_status,
                    "version": s.version,
                    "installed": s.installed,
                }
                for s in facts.slots
            ]
            if facts
            else [],
        }
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        line = core.status_line(state)
        print(line[1] if line else "update: no update installed yet")
        if state_error:
            print(f"update: state unreadable: {state_error}")
        if facts:
            for s in facts.slots:
                mark = "*" if s.bootname == facts.booted else " "
                print(
                    f"{mark} slot {s.bootname or '-'} ({s.name}): {s.state}, boot status "
                    f"{s.boot_status or '-'}, version {s.version or '-'}"
                    + (f", installed {s.installed}" if s.installed else "")
                    + ("  [tried first]" if s.bootname == facts.primary else "")
                )
        else:
            print(f"rauc: {rauc_error}")
    warning = state_error or rauc_error or (state is not None and state.outcome == "fell_back")
    return 1 if warning else 0
