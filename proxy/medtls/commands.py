"""Core subcommands: `run` and `check` (workers: > 1 is run by medtls.supervisor)."""

from __future__ import annotations

import logging
import sys

from medtls.config import ConfigError, load_config
from medtls.engine import fdlimit

log = logging.getLogger("medtls")


def register(sub) -> None:
    p = sub.add_parser("run", help="run the proxy daemon")
    p.add_argument("--config", "-c", required=True, help="YAML configuration file")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="override logging.level")  # fmt: skip
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check", help="validate the configuration and every certificate/key")
    p.add_argument("--config", "-c", required=True, help="YAML configuration file")
    p.set_defaults(func=cmd_check)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        if sys.stderr.isatty()
        else "%(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _problems(lines) -> int:
    for line in lines:
        print(line, file=sys.stderr)
    return 1


def cmd_check(args) -> int:
    from medtls.check import check_material

    try:
        config = load_config(args.config)
    except ConfigError as e:
        return _problems(e.problems)
    problems, warnings = check_material(config)
    descriptors = fdlimit.check(config.limits)  # what `run` would meet under this RLIMIT_NOFILE
    if descriptors:
        warnings = [*warnings, descriptors]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if problems:
        return _problems(problems)
    print(f"{args.config}: OK ({len(config.outbound)} outbound, {len(config.inbound)} inbound)")
    return 0


def cmd_run(args) -> int:
    from medtls.tls.context import TLSSetupError

    try:
        config = load_config(args.config)
    except ConfigError as e:
        return _problems(e.problems)
    setup_logging(args.log_level or config.logging.level)
    from medtls.ops import control

    try:
        control.refuse_if_running(config.ops.control.socket)
    except control.ControlSocketInUse as e:
        return _problems([f"error: {e.strerror}"])
    if config.workers > 1:
        from medtls import supervisor

        try:
            supervisor.probe(config)
        except (TLSSetupError, OSError) as e:
            return _problems([_start_error(e)])
        return supervisor.run_workers(config, config.workers)
    return _serve(config)


def _serve(config) -> int:
    from medtls.engine.daemon import Daemon
    from medtls.ops.runtime import attach
    from medtls.tls.context import TLSSetupError

    ops = None
    try:
        daemon = Daemon(config)
        ops = attach(daemon, config)
        daemon.start()
    except (TLSSetupError, OSError) as e:
        if ops is not None:
            ops.close()
        return _problems([_start_error(e)])
    try:
        daemon.serve_forever()
    finally:
        ops.close()
    return 0


def _start_error(e: Exception) -> str:
    from medtls.tls.context import TLSSetupError

    if isinstance(e, TLSSetupError):
        return f"error: {e}"
    return f"error: {getattr(e, 'strerror', None) or e}"
