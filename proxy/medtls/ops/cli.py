"""`medtls status`, `reload`, `console` and `led`: talk to the running daemon over the control
socket."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
from pathlib import Path

from medtls.config.ops import parse_ops_sections

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

    p = subparsers.add_parser(
        "console",
        help="live status screen for the box's console; Enter starts the login program "
        "(run by agetty -n -l)",
    )
    _common(p)
    p.add_argument("--login", default="/bin/login", help="program Enter starts (/bin/login)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between redraws")
    p.set_defaults(func=cmd_console)

    p = subparsers.add_parser("led", help="show the box's state on the board LED (led: section)")
    _common(p)
    p.add_argument("--leds-dir", default="/sys/class/leds", help=argparse.SUPPRESS)
    p.add_argument("--once", action="store_true", help="set the LED once and exit")
    p.set_defaults(func=cmd_led)


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
    return ops_config(args).control.socket


def ops_config(args):
    """The ops sections of the config file, defaults where it is unreadable or invalid."""
    try:
        import yaml

        with open(args.config, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except Exception:  # unreadable or invalid: `medtls check` reports it; status still tries
        raw = {}
    base = Path(args.config).resolve().parent  # relative paths as the daemon resolves them
    cfg, _ = parse_ops_sections(raw if isinstance(raw, dict) else {}, base)
    return cfg


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


def cmd_console(args) -> int:
    from . import console, led

    path = socket_path(args)
    fd = sys.stdin.fileno()

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        return console.run(
            fd,
            write,
            console.fetcher(path),
            [args.login],
            args.interval,
            hostname=socket.gethostname(),
            certificate_present=lambda: led.identity_present(args.config),
            size=lambda: console.terminal_size(fd),
        )
    except KeyboardInterrupt:  # agetty's unit starts the next screen
        return 0
    except OSError as exc:
        print(f"medtls console: {exc}", file=sys.stderr)
        return 1


def cmd_led(args) -> int:
    from . import console, led

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    cfg = ops_config(args)
    if not cfg.led.enabled:
        print("medtls led: led.enabled is false; the LED is left alone", file=sys.stderr)
        return 0
    found = led.find(args.leds_dir, cfg.led.names)
    if found is None:  # said once; the unit then ends without failing
        print(
            f"medtls led: no LED {' or '.join(cfg.led.names) or '(none configured)'} in "
            f"{args.leds_dir}; this board shows no LED pattern (led.names)",
            file=sys.stderr,
        )
        return 0
    stopping = {"now": False}

    def stop(_signum, _frame):
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    board = led.Led(found)
    try:
        return led.run(
            board,
            console.fetcher(socket_path(args)),
            lambda: led.identity_present(args.config),
            cfg.led.interval,
            once=args.once,
            stop=lambda: stopping["now"],
        )
    except KeyboardInterrupt:
        return 0
    finally:
        if not args.once:
            board.restore()
