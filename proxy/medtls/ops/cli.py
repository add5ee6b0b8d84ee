"""`medtls status` and `medtls reload`: talk to the running daemon over the control socket."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medtls.config.ops import DEFAULT_CONTROL_SOCKET, parse_ops_sections

from . import control, health


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "status",
        help="health summary of the running daemon (exit 0 ok, 1 warning, 2 critical, 3 unknown)",
    )
    _common(p)
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser(
        "reload", help="reload certificates and configuration in the running daemon"
    )
    _common(p)
    p.add_argument("--timeout", type=float, default=70.0, help="seconds to wait (default 70)")
    p.set_defaults(func=cmd_reload)


def _common(p) -> None:
    p.add_argument(
        "--config",
        "-c",
        default="/etc/medtls/medtls.yaml",
        help="configuration file, to find control.socket",
    )
    p.add_argument("--socket", help="control socket (overrides the config)")


def socket_path(args) -> str:
    """--socket, else control.socket from the config file, else the default."""
    if args.socket:
        return args.socket
    try:
        import yaml

        with open(args.config, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except Exception:  # unreadable or invalid: `medtls check` reports it; status still tries
        return DEFAULT_CONTROL_SOCKET
    base = Path(args.config).resolve().parent  # relative paths as the daemon resolves them
    cfg, _ = parse_ops_sections(raw if isinstance(raw, dict) else {}, base)
    return cfg.control.socket


def cmd_status(args) -> int:
    path = socket_path(args)
    try:
        status = control.request(path, "status", timeout=10)
    except control.ControlError as exc:
        print(f"medtls: UNKNOWN: {exc}", file=sys.stderr)
        return health.UNKNOWN
    if not status.get("ok", False):
        print(f"medtls: UNKNOWN: daemon answered: {status.get('error')}", file=sys.stderr)
        return health.UNKNOWN
    level, _ = health.evaluate(status)
    crl_fetch = crl_fetch_line(args.config)
    if args.json:
        status["health"] = health.LEVEL_NAMES[level]
        if crl_fetch:
            status["crl_fetch"] = crl_fetch
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        sys.stdout.write(health.render(status) + (crl_fetch + "\n" if crl_fetch else ""))
    return level


def crl_fetch_line(config: str) -> str | None:
    """The result of the last `medtls crl-fetch`, when the config has a crl_fetch section."""
    from medtls.config.schema import SCHEMA, Reader
    from medtls.core.crlstate import StateError, read_state, summary

    try:
        import yaml

        with open(config, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
        section = raw.get("crl_fetch") if isinstance(raw, dict) else None
        if not isinstance(section, dict):
            return None
        r = Reader(Path(config).resolve().parent, check_files=False)
        v = r.value(SCHEMA.keys["crl_fetch"], section, "crl_fetch")
        return summary(read_state(v["state_file"]))
    except StateError as e:
        return f"crl fetch: state unreadable: {e}"
    except Exception:  # an unreadable config is `medtls check`'s to report
        return None


def cmd_reload(args) -> int:
    path = socket_path(args)
    try:
        reply = control.request(path, "reload", timeout=args.timeout)
    except control.ControlError as exc:
        print(f"medtls reload: {exc}", file=sys.stderr)
        return 1
    if reply.get("ok"):
        print(f"medtls reload: ok, configuration generation {reply.get('generation')} in force")
        return 0
    print(
        f"medtls reload: FAILED, the running configuration stays in force: {reply.get('error')}",
        file=sys.stderr,
    )
    return 1
