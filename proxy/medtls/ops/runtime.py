"""OpsRuntime: the engine observer that feeds systemd, metrics, logs, audit and status.

It knows the engine only as a `medtls.core.handle.EngineHandle` and its events. Observer
methods run on the engine's event loop: they only update in-memory state, append
to the audit queue and send non-blocking datagrams. Servers (metrics, control) and the audit
sender run in their own threads and read the state under a lock.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from medtls import __version__
from medtls.config import Config
from medtls.core import connlog
from medtls.core.certinfo import CRL, IDENTITY
from medtls.core.events import DIRECTIONS, RESULT_TRUNCATED, RESULTS, Observer
from medtls.core.handle import EngineHandle
from medtls.core.trail import describe

from . import certs, clock
from .auditing import Auditor
from .control import ControlServer
from .filewatch import FileWatcher
from .instruments import Instruments
from .metrics import Registry
from .sdnotify import Notifier
from .workerstatus import worker_socket

log = logging.getLogger("medtls.ops")

# handshake_failed reasons that are node-authentication failures (audited as ITI-19 failures);
# routing, limits and connect errors are logged and counted but are not authentication events.
AUTH_FAILURES = frozenset(
    {
        "unknown_ca",
        "cert_expired",
        "cert_revoked",
        "cert_purpose",
        "peer_unknown_ca",
        "peer_cert_expired",
        "peer_cert_revoked",
        "crl_unusable",
        "no_certificate",
        "acl_denied",
        "identity_mismatch",
        "protocol_version",
        "no_shared_cipher",
        "not_tls",
        "peer_rejected",
        "handshake_error",
        "bad_certificate",
        "clock_unsynced",
        "calling_ae_refused",
    }
)
CLOCK_UNSYNCED = "clock_unsynced"
CLOCK_RECHECK = 5.0
FILE_RECHECK = 1.0
STATUS_RECHECK = 1.0
RELOAD_WAIT = 60.0
HEARTBEAT = 1.0  # seconds; shortened below when WatchdogSec is tiny


def _label(route: str) -> str:
    return route or "none"


class _Peer:
    __slots__ = (
        "active",
        "direction",
        "last_failure",
        "last_failure_reason",
        "last_success",
        "last_success_identity",
        "name",
        "total",
    )

    def __init__(self, name: str, direction: str):
        self.name = name
        self.direction = direction
        self.active = 0
        self.total = 0
        self.last_success: float | None = None
        self.last_success_identity = ""
        self.last_failure: float | None = None
        self.last_failure_reason = ""

    def as_dict(self) -> dict:
        return {
            "active": self.active,
            "direction": self.direction,
            "last_failure": self.last_failure,
            "last_failure_reason": self.last_failure_reason,
            "last_success": self.last_success,
            "last_success_identity": self.last_success_identity,
            "name": self.name,
            "total": self.total,
        }


class _Conn:
    __slots__ = (
        "cipher",
        "established",
        "failed",
        "info",
        "names",
        "opened",
        "peer",
        "version",
    )

    def __init__(self, info, opened: float = 0.0):
        self.info = info
        self.opened = opened  # time.monotonic() at accept: the handshake duration's start
        self.names: dict[str, str] = {}  # of the first message (medtls.core.trail)
        self.peer = ""
        self.version = ""
        self.cipher = ""
        self.failed = ""
        # Inbound: when TLS was established. The peer's success counts only once the device
        # leg did not fail (at close): a client that passed TLS but whose device cannot be
        # reached is one failure (connect_failed), not a success and a failure.
        self.established: float | None = None


class OpsRuntime(Observer):
    def __init__(
        self,
        config: Config,
        engine: EngineHandle | None = None,
        env: dict[str, str] | None = None,
        clock_reader=None,
        start_servers: bool = True,
        worker: tuple[int, int] | None = None,
        alive=None,
    ):
        self.config = config
        # The update process's state file (fixed on the box; tests point it elsewhere).
        self.update_state_path = (os.environ if env is None else env).get(
            "MEDTLS_UPDATE_STATE", "/var/lib/medtls/update/state.json"
        )
        self._alive = alive  # called from every loop tick (a worker's liveness for its parent)
        self._worker = worker
        self.ops = config.ops
        self.engine = engine
        self.notifier = Notifier(env)
        self._clock_reader = clock_reader or (
            lambda: clock.read_state(self.ops.clock.sync_file, self.ops.clock.not_before)
        )
        self._start_servers = start_servers
        self._lock = threading.RLock()
        self.started = time.time()
        self.ready_flag = False
        self.draining = False
        self.generation = 1
        self.listeners: list[dict] = []
        self.conns: dict[int, _Conn] = {}
        self.total_connections = 0
        self.peers: dict[str, _Peer] = {}
        self.reloads = {
            "ok": 0,
            "failed": 0,
            "last_result": None,
            "last_error": "",
            "last_time": None,
        }
        self._reload_waiters: list[tuple[threading.Event, dict]] = []
        self._last_clock_check = 0.0
        self.clock_state = self._clock_reader()
        self._last_file_check = 0.0
        self.watcher = FileWatcher(self._watched_paths)
        self._last_status_sent = 0.0
        self._status_text = ""
        self.certs, self.cert_problems = self._certificates()

        self.registry = Registry()
        self.m = Instruments(self.registry)
        self._keys: dict[tuple, tuple[str, ...]] = {}  # metric label keys, built once each
        self._handshake_keys = {
            d: self.m.handshake_duration.labels(direction=d) for d in DIRECTIONS
        }
        self._learn_routes(config)
        self.m.start_time.set(self.started)
        self.m.generation.set(self.generation)
        self.registry.on_collect(self._collect)
        self.auditor = Auditor(self.ops.audit, config.device.ip or "", env, worker)
        self.metrics_server = None  # MetricsServer (http.server is imported only when enabled)
        self.log_forward = None  # logforward.LogForwarder when logging.syslog is on
        self.control: ControlServer | None = None
        self._heartbeat_stop = threading.Event()
        self._tick_pending = False
        self._stopped_audited = False
        self._log_clock(initial=True)

    # ---------------------------------------------------------------- setup / teardown

    def _collect(self) -> None:
        now = time.time()
        with self._lock:
            infos = list(self.certs)
        m = self.m
        for metric in (m.cert_not_after, m.cert_not_before, m.crl_next_update, m.crl_this_update):
            metric.clear()
        m.cert_expiry.clear()
        for info in infos:
            m.cert_expiry.set(
                info.seconds_left(now), role=info.role, subject=info.subject, path=info.path
            )
            if info.role == CRL:
                m.crl_next_update.set(info.not_after, issuer=info.subject, path=info.path)
                if info.not_before is not None:
                    m.crl_this_update.set(info.not_before, issuer=info.subject, path=info.path)
                continue
            labels = {"role": info.role, "subject": info.subject, "path": info.path}
            m.cert_not_after.set(info.not_after, **labels)
            if info.not_before is not None:
                m.cert_not_before.set(info.not_before, **labels)
        self.m.clock.set(1 if self.clock_state.synchronized else 0)
        self.m.validation.set(0 if self.validation_gate() else 1)
        enrolling = getattr(self.engine, "enrolling", None)  # started, waiting for a certificate
        self.m.ready.set(1 if self.ready_flag and not self.draining and not enrolling else 0)
        self._collect_enrollment()
        self._collect_update()
        audit = self.auditor.counters()
        self.m.audit_sent.set(audit["sent"])
        self.m.audit_dropped.set(audit["dropped"])
        self.m.audit_queue.set(audit["queued"])
        self.m.audit_connected.set(1 if audit["connected"] else 0)

    def start(self) -> None:
        self.auditor.start()
        forward = self.config.logging.syslog
        if forward.transport != "none":
            from . import logforward

            self.log_forward = logforward.start(forward, self.ops.audit.source_id)
        self._start_heartbeat()
        if not self._start_servers:
            return
        m = self.ops.metrics
        if m.enabled and self._worker is None:  # one endpoint per service: workers have none
            try:
                from .metrics_http import MetricsServer

                self.metrics_server = MetricsServer(self.registry, m.host, m.port, self.health)
                self.metrics_server.start()
                log.info("metrics on http://%s:%d/metrics", m.host, m.port)
            except OSError as exc:
                log.error("metrics.listen %s:%d: cannot listen: %s", m.host, m.port, exc.strerror)
        path = self.ops.control.socket
        if self._worker is not None:  # the parent answers on control.socket, asking each worker
            path = worker_socket(path, self._worker[0])
        try:
            self.control = ControlServer(
                path, {"status": self._cmd_status, "reload": self._cmd_reload}
            )
            self.control.start()
        except OSError as exc:
            log.error("control.socket %s: cannot listen: %s", path, exc.strerror or exc)

    def _start_heartbeat(self) -> None:
        """Run tick() on the daemon's loop thread once a second: WATCHDOG=1 then proves the
        loop itself is alive, not just some helper thread."""
        if self.engine is None:
            return
        call_soon = self.engine.call_soon

        def loop_tick():
            self._tick_pending = False
            self.tick()

        period = min(HEARTBEAT, self.notifier.watchdog / 2) if self.notifier.watchdog else HEARTBEAT

        def heartbeat():
            while not self._heartbeat_stop.wait(period):
                if not self._tick_pending:
                    self._tick_pending = True
                    call_soon(loop_tick)

        threading.Thread(target=heartbeat, name="medtls-heartbeat", daemon=True).start()

    def close(self) -> None:
        """After the daemon's loop returned: Application Stop, flush audit, stop servers."""
        self._heartbeat_stop.set()
        self.stopped()
        if self.control is not None:
            self.control.stop()
            self.control = None
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None
        self.auditor.stop(flush_timeout=3.0)
        if self.log_forward is not None:
            self.log_forward.stop()
            self.log_forward = None
        self.notifier.close()

    # ---------------------------------------------------------------- clock gate

    def _log_clock(self, initial: bool = False) -> None:
        allowed, reason = clock.validation_allowed(self.clock_state, self.ops.clock.require_sync)
        if self.clock_state.synchronized:
            if not initial:
                log.info("clock: %s", reason)
        elif allowed:
            log.warning("clock: %s", reason)
        else:
            log.error("clock: %s until it is", reason)

    def refresh_clock(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._last_clock_check = now
        state = self._clock_reader()
        changed = state.synchronized != self.clock_state.synchronized
        self.clock_state = state
        if changed:
            self._log_clock()

    def validation_gate(self) -> str | None:
        """None when certificates may be validated, else the reason (daemon refuses the TLS)."""
        if time.monotonic() - self._last_clock_check > CLOCK_RECHECK:
            self.refresh_clock()
        allowed, reason = clock.validation_allowed(self.clock_state, self.ops.clock.require_sync)
        return None if allowed else reason

    # ---------------------------------------------------------------- observer events

    def listener_ready(self, name, direction, address) -> None:
        with self._lock:
            self.listeners.append(
                {"name": name, "direction": direction, "address": connlog.addr(address)}
            )

    def ready(self) -> None:
        if self.ready_flag:
            return
        self.ready_flag = True
        self.notifier.ready(self._status_line())
        self.auditor.application(started=True)
        log.info("ready: %d listeners", len(self.listeners))

    def connection_opened(self, conn) -> None:
        with self._lock:
            self.conns[conn.id] = _Conn(conn, time.monotonic())
            self.total_connections += 1
            peer = self._peer(conn)
            peer.active += 1
            peer.total += 1
        self.m.active.add(self._key("active", conn.direction, conn.route))

    def _key(self, kind: str, *values: str) -> tuple[str, ...]:
        """Label key of a per-connection metric; routes, results, versions and ciphers are few,
        so each key is validated once instead of per event."""
        ck = (kind, *values)
        key = self._keys.get(ck)
        if key is None:
            m = self.m
            if kind == "active":
                key = m.active.labels(direction=values[0], peer=_label(values[1]))
            elif kind == "total":
                key = m.total.labels(direction=values[0], peer=_label(values[1]), result=values[2])
            elif kind == "bytes":
                key = m.bytes.labels(direction=values[0], peer=_label(values[1]), stream=values[2])
            else:  # tls
                key = m.tls_total.labels(version=values[0], cipher=values[1])
            if len(self._keys) < 4096:
                self._keys[ck] = key
        return key

    def _peer(self, conn) -> _Peer:
        """State of the configured route; unrouted (default-deny) connections are no peer."""
        if not conn.route:
            return _Peer("none", conn.direction)
        peer = self.peers.get(conn.route)
        if peer is None:
            peer = self.peers[conn.route] = _Peer(conn.route, conn.direction)
        return peer

    def _learn_routes(self, config: Config) -> None:
        routes = [(p.name, "outbound") for p in config.outbound]
        routes += [(p.name, "inbound") for p in config.inbound]
        for name, direction in routes:
            if name not in self.peers:
                self.peers[name] = _Peer(name, direction)
                for result in RESULTS:  # rate() per route works from the first scrape
                    self.m.total.add(self._key("total", direction, name, result), 0)

    def tls_established(self, conn, version, cipher, peer) -> None:
        with self._lock:
            state = self.conns.get(conn.id)
            if state is not None:
                state.version, state.cipher, state.peer = version, cipher, peer
                self.m.handshake_duration.observe(
                    self._handshake_keys[conn.direction], time.monotonic() - state.opened
                )
            if conn.direction == "inbound" and state is not None:
                state.established = time.time()
            else:
                p = self._peer(conn)
                p.last_success = time.time()
                p.last_success_identity = peer
        key = self._key("tls", version, cipher)
        self.m.tls_total.add(key)
        self.m.tls_active.add(key)
        self.auditor.node_authentication(
            True,
            peer_address=self._remote(conn)[0],
            peer_identity=peer,
            direction=conn.direction,
            tls_version=version,
            cipher=cipher,
        )

    def _remote(self, conn) -> tuple[str, int]:
        """The LAN side of a connection: the destination outbound, the client inbound."""
        return tuple(conn.destination if conn.direction == "outbound" else conn.client)

    def handshake_failed(self, conn, reason, detail) -> None:
        with self._lock:
            state = self.conns.get(conn.id)
            if state is not None:
                state.failed = detail or reason
            p = self._peer(conn)
            p.last_failure = time.time()
            p.last_failure_reason = reason
        self.m.handshake_failures.inc(direction=conn.direction, reason=reason)
        if reason in AUTH_FAILURES:
            names = state.names if state is not None else {}
            self.auditor.node_authentication(
                False,
                peer_address=self._remote(conn)[0],
                direction=conn.direction,
                reason=f"{reason}: {detail}" if detail else reason,
                calling_ae=names.get("calling_ae", ""),
                called_ae=names.get("called_ae", ""),
            )

    def connection_closed(self, conn, bytes_from_client, bytes_from_server, duration, result):
        with self._lock:
            state = self.conns.pop(conn.id, None) or _Conn(conn)
            p = self._peer(conn)
            p.active = max(0, p.active - 1)
            ok_at = state.established if not state.failed else None
            if ok_at is not None and (p.last_success is None or ok_at >= p.last_success):
                p.last_success = ok_at
                p.last_success_identity = state.peer
        d, route, m = conn.direction, conn.route, self.m
        m.active.add(self._key("active", d, route), -1)
        m.total.add(self._key("total", d, route, result))
        to_lan, to_device = (
            (bytes_from_client, bytes_from_server)
            if d == "outbound"
            else (bytes_from_server, bytes_from_client)
        )
        m.bytes.add(self._key("bytes", d, route, "device_to_lan"), to_lan)
        m.bytes.add(self._key("bytes", d, route, "lan_to_device"), to_device)
        if state.version:
            m.tls_active.add(self._key("tls", state.version, state.cipher), -1)
        if result == RESULT_TRUNCATED:
            # The peer's TLS stream ended without close_notify: the end of the stream failed TLS
            # authentication (a peer that died, or someone on the path cutting a transfer).
            self.auditor.node_authentication(
                False,
                peer_address=self._remote(conn)[0],
                peer_identity=state.peer,
                direction=conn.direction,
                reason="truncated: TLS stream ended without close_notify; device side reset",
                tls_version=state.version,
                cipher=state.cipher,
                calling_ae=state.names.get("calling_ae", ""),
                called_ae=state.names.get("called_ae", ""),
            )
        # The daemon logs the one line per connection (medtls.core.connlog.connection_line).

    def first_message(self, conn, names) -> None:
        with self._lock:
            state = self.conns.get(conn.id)
            if state is not None:
                state.names = dict(names)
        protocol = "dicom" if "calling_ae" in names else "hl7" if names else "unreadable"
        self.m.first_messages.inc(
            direction=conn.direction, peer=_label(conn.route), protocol=protocol,
            ae_known="yes" if self._ae_configured(conn, names) else "no",
        )  # fmt: skip

    def _ae_configured(self, conn, names) -> bool:
        """Whether the calling AE title is one the inbound port's allow entries name (metrics
        count against the configuration: a raw AE title never becomes a label)."""
        calling = names.get("calling_ae")
        if calling is None or conn.direction != "inbound":
            return False
        port = next((p for p in self.config.inbound if p.name == conn.route), None)
        return port is not None and any(calling in (r.calling_ae or ()) for r in port.allow)

    def connected_now(self) -> list[dict]:
        """Who is connected now: open connections grouped by route, peer identity and the
        names of their first message (`medtls status`)."""
        groups: dict[tuple, int] = {}
        for state in self.conns.values():
            info = state.info
            key = (info.route or "-", info.direction, state.peer, describe(state.names))
            groups[key] = groups.get(key, 0) + 1
        return [
            {"route": r, "direction": d, "peer": p, "names": n, "count": count}
            for (r, d, p, n), count in sorted(groups.items())
        ]

    def reloading(self) -> None:
        self.notifier.reloading()

    def reload_ok(self, generation) -> None:
        if not self.ready_flag and generation == 1:
            self.ready()  # Daemon.start(): listeners open, material loaded
            return
        if self.engine is not None:
            self.config = self.engine.config
        old = {(c.path, c.role): c.fingerprint_sha256 for c in self.certs}
        old_identity = next((c for c in self.certs if c.role == IDENTITY), None)
        new_certs, problems = self._certificates()
        self._audit_identity_change(old_identity, new_certs, generation)
        with self._lock:
            self.generation = generation
            self._learn_routes(self.config)
            self.certs, self.cert_problems = new_certs, problems
            self.reloads["ok"] += 1
            self.reloads.update(last_result="ok", last_error="", last_time=time.time())
        self.watcher.rebase()
        self.m.reloads.inc(result="ok")
        self.m.generation.set(generation)
        self.notifier.ready(self._status_line())
        changed = sorted(
            {c.path for c in new_certs if old.get((c.path, c.role)) != c.fingerprint_sha256}
        )
        for path in changed:
            subjects = ", ".join(c.subject for c in new_certs if c.path == path)
            self.auditor.configuration_change(
                True, path, f"certificate file reloaded (generation {generation}): {subjects}"
            )
        if not changed:
            self.auditor.configuration_change(
                True,
                self._config_path(),
                f"configuration reloaded (generation {generation})",
                security=False,
            )
        self._wake_reload_waiters({"ok": True, "generation": generation})

    def _audit_identity_change(self, old, new_certs, generation) -> None:
        """A new identity certificate (renewed, enrolled or replaced by hand): one log line and
        one audit event naming both serials and expiry dates."""
        new = next((c for c in new_certs if c.role == IDENTITY), None)
        if old is None or new is None or not new.serial or old.serial == new.serial:
            return
        text = (
            f"identity certificate replaced (generation {generation}): serial {old.serial} "
            f"(expires {old.not_after_iso}) -> serial {new.serial} (expires {new.not_after_iso})"
        )
        log.info(text)
        self.auditor.configuration_change(True, new.path, text)

    def enrollment_status(self) -> dict | None:
        """The enroll process's state.json (None without enrollment): read on demand, tiny."""
        enrollment = getattr(self.config, "enrollment", None)
        if enrollment is None:
            return None
        from medtls.core.enrollment import StateFileError, current_phase, read_state

        try:
            state = read_state(enrollment.state_path)
        except StateFileError as e:
            return {"phase": "unknown", "state_error": str(e)}
        if state is None:
            return {"phase": "enrolling", "last_error": None, "attempts": 0}
        out = {k: getattr(state, k) for k in state.__dataclass_fields__}
        out["ari_window"] = list(state.ari_window) if state.ari_window else None
        out["phase"] = current_phase(state, time.time())
        return out

    def update_status(self) -> dict | None:
        """The update process's state.json (None before the first install): read on demand."""
        from medtls.core.update import StateFileError, read_state, status_dict, status_line

        try:
            state = read_state(self.update_state_path)
        except StateFileError as e:
            return {"outcome": "unknown", "state_error": str(e), "line": f"update: {e}"}
        if state is None:
            return None
        warning, line = status_line(state)
        return {**status_dict(state), "line": line, "warning": warning}

    def _collect_update(self) -> None:
        m = self.m
        m.update_info.clear()
        state = self.update_status()
        m.update_fallbacks.set((state or {}).get("fallbacks") or 0)
        if state and state.get("slot"):
            m.update_info.set(
                1, slot=state["slot"], version=state["version"], outcome=state["outcome"]
            )

    def _collect_enrollment(self) -> None:
        m = self.m
        for metric in (m.enrollment_phase, m.next_renewal, m.enrollment_failure):
            metric.clear()
        m.enrollment_attempts.clear()
        state = self.enrollment_status()
        if state is None:
            return
        from medtls.core.enrollment import PHASES

        for phase in (*PHASES, "unknown"):  # a fixed label set: one series per known phase
            m.enrollment_phase.set(1 if state["phase"] == phase else 0, phase=phase)
        if state.get("next_renewal"):
            m.next_renewal.set(state["next_renewal"])
        failing = state.get("attempts") and state.get("last_error")
        m.enrollment_failure.set((state.get("last_attempt") or 0) if failing else 0)
        m.enrollment_attempts.set(state.get("attempts") or 0)

    def reload_failed(self, error) -> None:
        with self._lock:
            self.reloads["failed"] += 1
            self.reloads.update(last_result="failed", last_error=error, last_time=time.time())
        self.watcher.rebase()
        self.m.reloads.inc(result="failed")
        self.notifier.ready(self._status_line())
        self.auditor.configuration_change(
            False,
            self._config_path(),
            f"reload rejected, previous configuration stays in force: {error}",
        )
        self._wake_reload_waiters({"ok": False, "error": error, "generation": self.generation})

    def stopping(self) -> None:
        self.draining = True
        self.notifier.stopping(f"draining {len(self.conns)} connections")

    def stopped(self) -> None:
        if self._stopped_audited:
            return
        self._stopped_audited = True
        if self.ready_flag:  # no Application Stop for a start that never completed
            self.auditor.application(started=False)

    def tick(self, now: float | None = None) -> None:
        mono = time.monotonic()
        if self._alive is not None:
            self._alive()
        self.notifier.ping(mono)
        if mono - self._last_clock_check > CLOCK_RECHECK:
            self.refresh_clock(mono)
        if mono - self._last_status_sent > STATUS_RECHECK:
            self._last_status_sent = mono
            text = self._status_line()
            if text != self._status_text:
                self._status_text = text
                self.notifier.status(text)
        if self.ops.control.watch_files and mono - self._last_file_check > FILE_RECHECK:
            self._last_file_check = mono
            changed = self.watcher.check()
            if changed:
                log.info("reload: files changed: %s", ", ".join(changed))
                if self.engine is not None:
                    self.engine.reload()  # on the loop thread: the reload runs right here

    # ---------------------------------------------------------------- files, status

    def _certificates(self):
        """The engine's certificates of its generation in force, plus the audit channel's."""
        audit, problems = certs.audit_infos(self.ops.audit)
        loaded = self.engine.certificates() if self.engine is not None else []
        return certs.once_per_file(loaded + audit), problems

    def _config_path(self) -> str:
        return str(self.config.path)

    def _watched_paths(self) -> list[str]:
        return [self._config_path(), *certs.watched_files(self.config)]

    def _status_line(self) -> str:
        clock_note = "" if self.clock_state.synchronized else "; CLOCK NOT SYNCHRONISED"
        return (
            f"{len(self.conns)} active connections, {self.total_connections} total, "
            f"generation {self.generation}{clock_note}"
        )

    def status(self) -> dict:
        now = time.time()
        if time.monotonic() - self._last_clock_check > CLOCK_RECHECK:
            self.refresh_clock()
        allowed, _ = clock.validation_allowed(self.clock_state, self.ops.clock.require_sync)
        with self._lock:
            identity = next((c for c in self.certs if c.role == IDENTITY), None)
            device = self.config.device
            snapshot = {}
            if self.engine is not None:
                try:
                    snapshot = self.engine.snapshot()
                except Exception as exc:  # status must work even if the snapshot breaks
                    snapshot = {"error": str(exc)}
            result = {
                "ok": True,
                "now": now,
                # The running daemon's: after a package upgrade it differs until the restart.
                "version": __version__,
                "pid": os.getpid(),
                "started": self.started,
                "ready": self.ready_flag,
                "draining": self.draining,
                "generation": self.generation,
                "config_path": self._config_path(),
                "device": {
                    "ip": device.ip,
                    "mac": device.mac,
                    "identity_subject": identity.subject if identity else None,
                    "identity_fingerprint": identity.fingerprint_sha256 if identity else None,
                    "identity_not_after": identity.not_after if identity else None,
                },
                "listeners": list(self.listeners),
                "connections": {"active": len(self.conns), "total": self.total_connections},
                "peers": [p.as_dict() for p in self.peers.values()],
                "connected": self.connected_now(),
                "certificates": [
                    {
                        "path": c.path,
                        "role": c.role,
                        "subject": c.subject,
                        "not_after": c.not_after,
                        "not_before": c.not_before,
                        "serial": c.serial,
                    }
                    for c in self.certs
                ],
                "certificate_problems": list(self.cert_problems),
                "enrollment": self.enrollment_status(),
                "update": self.update_status(),
                "clock": {
                    "synchronized": self.clock_state.synchronized,
                    "source": self.clock_state.source,
                    "detail": self.clock_state.detail,
                    "require_sync": self.ops.clock.require_sync,
                    "validation_allowed": allowed,
                },
                "reloads": dict(self.reloads),
                "audit": self.auditor.counters(),
                "log_forward": self.log_forward.counters() if self.log_forward else None,
                "metrics": {
                    "listen": f"{self.ops.metrics.host}:{self.ops.metrics.port}"
                    if self.ops.metrics.enabled
                    else None
                },
                "snapshot": snapshot,
            }
        return result

    def health(self) -> dict:
        """/healthz: the verdict of `medtls status` and the box's state, as a JSON-able dict."""
        from . import boxstate, health

        status = self.status()
        level, problems = health.evaluate(status)
        state, reason = boxstate.classify(status)
        return {
            "health": health.LEVEL_NAMES[level],
            "state": state,
            "reason": reason,
            "reasons": [{"level": health.LEVEL_NAMES[lvl], "problem": t} for lvl, t in problems],
        }

    # ---------------------------------------------------------------- control commands

    def _cmd_status(self, request: dict) -> dict:
        return self.status()

    def _cmd_reload(self, request: dict) -> dict:
        if self.engine is None:
            return {"ok": False, "error": "no engine to reload"}
        event, box = threading.Event(), {}
        with self._lock:
            self._reload_waiters.append((event, box))
        self.engine.reload()  # blocks until the loop has done it; the events fill `box`
        if not event.wait(RELOAD_WAIT):
            with self._lock:
                self._reload_waiters = [w for w in self._reload_waiters if w[0] is not event]
            return {"ok": False, "error": f"no reload outcome within {RELOAD_WAIT:g}s"}
        return box

    def _wake_reload_waiters(self, outcome: dict) -> None:
        with self._lock:
            waiters, self._reload_waiters = self._reload_waiters, []
        for event, box in waiters:
            box.update(outcome)
            event.set()


def attach(
    engine: EngineHandle,
    config: Config,
    worker: tuple[int, int] | None = None,
    alive=None,
) -> OpsRuntime:
    """Wire ops into an engine: observer, clock gate, servers. Call close() after run.

    A worker
    (`worker` = (index, count), `workers:` > 1) keeps the clock gate, the audit trail, file
    watching, its loop's liveness (`alive`) and a control socket of its own for the parent
    (`workerstatus.worker_socket`); systemd notification belongs to the parent, metrics are off."""
    env = None
    if worker is not None:
        hidden = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        env = {k: v for k, v in os.environ.items() if k not in hidden}
    runtime = OpsRuntime(config, engine, env=env, worker=worker, alive=alive)
    engine.add_observer(runtime)
    engine.validation_gate = runtime.validation_gate
    runtime.start()
    return runtime
