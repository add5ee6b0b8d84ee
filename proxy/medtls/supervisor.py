"""Worker supervision for `workers:` > 1: fork, forward signals, answer for all, stop together."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal

log = logging.getLogger("medtls")


def probe(config) -> None:
    """Fail before forking if TLS material or a listen address is unusable.

    Workers then open their own SO_REUSEPORT listeners and epoll (neither may be shared across
    fork, and an idle listener in the group would strand connections).
    """
    from medtls.engine.listeners import listener_specs
    from medtls.engine.netutil import listen_socket
    from medtls.tls.material import awaiting_enrollment, validate
    from medtls.tls.openssl import self_test

    self_test()
    if not awaiting_enrollment(config):  # enrolling: each worker waits for its first reload
        validate(config, 1)  # the same validation as `medtls check` and reload
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


def run_workers(config, workers: int) -> int:
    """Fork workers with their own listeners; the parent forwards HUP/TERM/INT to them, tells
    systemd READY=1 once every worker serves, and pings the watchdog only while every worker's
    loop ticks. When one worker ends, the others are stopped: the service is all of them or none
    (systemd's Restart= then starts it afresh)."""
    from medtls.ops.sdnotify import Notifier

    log.warning("workers: %d: no metrics endpoint (it needs workers: 1)", workers)
    alive: dict[int, int] = {}  # pid -> read end of the worker's liveness pipe
    for index in range(workers):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            for fd in alive.values():
                os.close(fd)
            _die_with_parent()
            os._exit(_worker(config, (index, workers), w))
        os.close(w)
        alive[pid] = r
    notifier = Notifier()
    state = {"stopping": False}

    def forward(signum, _frame):
        if signum in (signal.SIGTERM, signal.SIGINT) and not state["stopping"]:
            state["stopping"] = True
            notifier.stopping(f"stopping {len(alive)} workers")
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    control = _service_control(config, workers)
    try:
        return _supervise(alive, workers, notifier, forward, state)
    finally:
        if control is not None:
            control.stop()
        notifier.close()


def _service_control(config, workers: int):
    """control.socket for the whole service: `medtls status` and `medtls reload` are asked of
    every worker on its own socket and answered as one."""
    import time

    from medtls.ops import control, workerstatus
    from medtls.ops.runtime import RELOAD_WAIT

    path = config.ops.control.socket
    started = time.time()

    def ask(command: str, timeout: float) -> list[dict]:
        answers = []
        for index in range(workers):
            try:
                answers.append(
                    control.request(
                        workerstatus.worker_socket(path, index), command, timeout=timeout
                    )
                )
            except control.ControlError as e:
                answers.append({"ok": False, "error": str(e)})
        return answers

    handlers = {
        "status": lambda _req: workerstatus.merge_status(ask("status", 5), os.getpid(), started),
        "reload": lambda _req: workerstatus.merge_reload(ask("reload", RELOAD_WAIT + 1)),
    }
    try:
        server = control.ControlServer(path, handlers)
    except OSError as e:
        log.error("control.socket %s: cannot listen: %s", path, e.strerror or e)
        return None
    server.start()
    return server


def _worker(config, worker: tuple[int, int], alive_fd: int) -> int:
    """One worker: the same daemon and ops as a single process, minus what the parent owns."""
    from medtls.engine.daemon import Daemon
    from medtls.ops.runtime import attach
    from medtls.tls.context import TLSSetupError

    def tick() -> None:
        with contextlib.suppress(OSError):
            os.write(alive_fd, b".")

    ops = None
    try:
        daemon = Daemon(config)
        ops = attach(daemon, config, worker=worker, alive=tick)
        daemon.start()
        tick()  # serving: the first tick is the parent's "ready"
        daemon.serve_forever()
    except (TLSSetupError, OSError) as e:
        log.error("worker %d: %s", worker[0], getattr(e, "strerror", None) or e)
        return 1
    except Exception:
        log.exception("worker %d failed", worker[0])
        return 1
    finally:
        if ops is not None:
            ops.close()
    return 0


def _supervise(alive: dict[int, int], workers: int, notifier, forward, state: dict) -> int:
    import select
    import time

    period = min(1.0, notifier.watchdog or 1.0)
    now = time.monotonic()
    last_tick = dict.fromkeys(alive, now)
    ticked: set[int] = set()
    ready = False
    rc = 0
    while alive:
        readable, _, _ = select.select(list(alive.values()), [], [], period)
        now = time.monotonic()
        for pid, fd in list(alive.items()):
            if fd not in readable:
                continue
            data = b""
            with contextlib.suppress(OSError):
                data = os.read(fd, 4096)
            if data:
                last_tick[pid] = now
                ticked.add(pid)
                continue
            os.close(fd)  # the worker is gone
            del alive[pid]
            code = _reap(pid)
            rc = rc or (1 if code else 0)
            if not state["stopping"]:
                log.error("worker (pid %d) ended with exit %d: stopping the others", pid, code)
                forward(signal.SIGTERM, None)
                rc = rc or 1  # the service did not choose to stop: let systemd restart it
        if not ready and len(ticked) == workers:
            ready = True
            notifier.ready(f"{workers} workers")
        if ready and all(now - last_tick[p] < 2 * period + 1 for p in alive):
            notifier.ping(now)  # a worker whose loop hangs stops these: systemd restarts us
    return rc


def _reap(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        return os.waitstatus_to_exitcode(status)
