"""Core subcommands: `run` and `check`."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys

from medtls.config import ConfigError, load_config

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
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if problems:
        return _problems(problems)
    print(f"{args.config}: OK ({len(config.outbound)} outbound, {len(config.inbound)} inbound)")
    return 0


def cmd_run(args) -> int:
    from medtls.daemon import Daemon
    from medtls.tlsctx import TLSSetupError

    try:
        config = load_config(args.config)
    except ConfigError as e:
        return _problems(e.problems)
    setup_logging(args.log_level or config.logging.level)
    from medtls.ops.runtime import attach

    ops = None
    try:
        if config.workers > 1:
            _probe(config)
        else:
            daemon = Daemon(config)
            ops = attach(daemon, config)  # workers == 1 only
            daemon.start()
    except TLSSetupError as e:
        if ops is not None:
            ops.close()
        return _problems([f"error: {e}"])
    except OSError as e:
        if ops is not None:
            ops.close()
        return _problems([f"error: {e.strerror or e}"])
    if config.workers > 1:
        return _run_workers(config, config.workers)
    try:
        daemon.serve_forever()
    finally:
        ops.close()
    return 0


def _probe(config) -> None:
    """Fail before forking if TLS material or a listen address is unusable.

    Workers then open their own SO_REUSEPORT listeners and epoll (neither may be shared across
    fork, and an idle listener in the group would strand connections).
    """
    from medtls.daemon import listener_specs
    from medtls.material import build_runtime
    from medtls.netutil import listen_socket
    from medtls.tlsctx import self_test

    self_test()
    build_runtime(config, 1)
    for spec in listener_specs(config):
        try:
            listen_socket(spec.host, spec.port, spec.transparent, reuseport=True).close()
        except OSError as e:
            raise OSError(
                e.errno, f"cannot listen on {spec.host}:{spec.port} ({spec.name}): {e.strerror}"
            ) from None


def _die_with_parent() -> None:
    """Workers get SIGTERM (and drain) if the parent is killed, instead of lingering."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _run_workers(config, workers: int) -> int:
    """Fork workers with their own listeners; the parent forwards HUP/TERM/INT to them."""
    from medtls.daemon import Daemon

    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            _die_with_parent()
            try:
                Daemon(config).serve_forever()
            except Exception:
                log.exception("worker failed")
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum, _frame):
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    rc = 0
    for pid in children:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = 0
            except InterruptedError:
                continue
            break
        rc = rc or os.waitstatus_to_exitcode(status)
    return rc
