"""The medtls daemon: wires listeners, connections and the relay into one event loop.

One epoll loop per process drives every socket (and every TLS object) of every connection. What
a connection does next is decided by its state machine (`medtls.engine.connection`): the daemon
feeds it events at each change and performs the actions it returns. Listening and admission live
in `medtls.engine.listeners`, the loop's machinery in `medtls.engine.loop`, the byte pump in
`medtls.engine.relay`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import itertools
import logging
import os
import signal
import socket
import ssl
import threading
import time

from medtls.config import Config, ConfigError, InboundPort, OutboundPeer, load_config
from medtls.core import events as ev
from medtls.core.certparse import CertParseError
from medtls.core.connlog import connection_line
from medtls.core.dicom import a_abort
from medtls.core.handle import EngineHandle
from medtls.core.outcomes import classify_tls_error
from medtls.core.policy import (
    CertIdentity,
    acl_allows,
    binds_calling_ae,
    calling_ae_allowed,
    peer_identity,
    route_inbound,
    route_outbound,
    unmap_v4,
    verify_mismatches,
)
from medtls.core.refusal import (
    ARTIM_SECONDS,
    AWAIT_CLOSE_CAP,
    FIRST_MESSAGE_CAP,
    NotAnswerable,
    answer,
)
from medtls.core.tlshello import offers_psk
from medtls.core.trail import first_names
from medtls.engine import connection as cx
from medtls.engine import relay, sessions
from medtls.engine.listeners import (
    ACCEPT_RESOURCE_ERRORS,
    AcceptBackoff,
    Admission,
    ListenerSpec,
    listener_specs,
    open_missing,
    source_key,
)
from medtls.engine.loop import ERRHUP, GONE, READ, WRITE, EventLoop
from medtls.engine.netutil import abort, original_dst_nat, set_options, upstream_socket
from medtls.engine.relay import BufferPool, Pipe, RelayError, Side, Truncated
from medtls.tls import TLSSetupError
from medtls.tls.material import Generation, awaiting_enrollment, validate
from medtls.tls.openssl import (
    ACCESS_DENIED,
    BAD_CERTIFICATE,
    access_denied_alert,
    forget_client,
    issue_no_ticket,
    judge_client,
    rotate_ticket_keys,
    self_test,
)

__all__ = ["Conn", "Daemon", "ListenerSpec", "listener_specs"]

log = logging.getLogger("medtls")
conn_log = logging.getLogger("medtls.conn")

# Give freed memory back to the kernel at most this often (seconds), and only after churn.
TRIM_INTERVAL = 5.0
TRIM_AFTER_CLOSED = 64
# A connection quiet this long after traffic gets fresh TLS BIOs (a BIO never shrinks).
BIO_RENEW_IDLE = 5.0
_CLOSED = cx.CLOSED
_HANDSHAKE = cx.HANDSHAKE
_RELAY_OPENING = cx.RELAY_OPENING
_RELAYING = cx.RELAYING
_HANDSHAKING = cx.HANDSHAKING
_DIALLING = cx.DIALLING
_REFUSING = cx.REFUSING
_READING_FIRST = cx.READING_FIRST
_AWAIT_CLOSE = cx.AWAIT_CLOSE


def _malloc_trim():
    """glibc's malloc_trim(), or None. Python and OpenSSL free many small blocks per connection;
    without a trim, glibc keeps a fragmented heap's free pages resident after a burst."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


class Conn:
    """One relayed connection: its state (`medtls.engine.connection`), its sockets, and the
    facts its connection line reports.

    Relay tuning, not connection state: `steady` (relaying past the first TLS data and the
    handshake-sized BIOs: the read fast path applies) and `bios_renewed` (when the TLS BIOs
    were last swapped for empty ones)."""

    __slots__ = (
        "ae_rule", "answering", "bios_renewed", "cipher", "client", "deadline", "detail", "dropped",
        "first", "info", "judge", "last_activity", "names", "not_delivered", "peer", "pipes",
        "protocol", "refusal", "refused", "resumed", "route", "rt", "server", "size", "state",
        "steady", "t0", "tls_side", "upstream", "version",
    )  # fmt: skip

    def __init__(self, info: ev.ConnInfo, rt: Generation, client: socket.socket, size: int):
        self.info = info
        self.rt = rt
        self.state = cx.ACCEPTED
        self.client = Side(self, "client", client)
        self.server: Side | None = None
        self.tls_side: Side | None = None
        self.pipes: tuple[Pipe, Pipe] | None = None
        self.size = size
        self.route: OutboundPeer | InboundPort | None = None
        self.upstream: tuple[str, int] | None = None
        self.deadline = 0.0  # of the connect or the handshake (limits.*_timeout)
        self.last_activity = time.monotonic()
        self.t0 = time.monotonic()
        self.version = ""
        self.cipher = ""
        self.peer = ""
        self.detail = ""  # why it failed or was closed early (for the connection line)
        self.resumed = False  # the TLS session was resumed from a ticket
        # Bytes written into a TLS connection whose peer then refused it (not delivered).
        self.not_delivered = 0
        self.judge = 0  # inbound: key of the in-handshake client judge (tls.openssl)
        self.refusal: tuple[str, str] | None = None  # (reason, detail) the judge refused with
        self.steady = False
        self.bios_renewed = 0.0  # time.monotonic() of the last BIO renewal
        # `protocol: dicom | hl7` of an outbound route ("" otherwise): a failed peer leg is
        # answered in the device's protocol (medtls.core.refusal).
        self.answering = ""
        # Answering routes: the device's first bytes, kept until the peer's first data (a TLS
        # 1.3 peer may still refuse our certificate) and read on while refusing; None otherwise.
        self.first: bytearray | None = None
        self.refused = ""  # the failure the device is being answered for
        self.dropped = 0  # DICOM, after the RJ: what the requester still sent (read, dropped)
        # `protocol:` of the route or port ("tcp" when none). On dicom/hl7, `first` also keeps
        # the first message (either direction's initiator) until its names are read (`names`:
        # medtls.core.trail; None until then, {} when it was no message of the protocol).
        self.protocol = "tcp"
        self.names: dict[str, str] | None = None
        # Inbound: the allow entry that admitted the client, when it binds calling AE titles.
        self.ae_rule = None


class Daemon(EventLoop, EngineHandle):
    """Run with `serve_forever()`; `reload()`, `stop()` and `snapshot()` may be called anytime."""

    def __init__(self, config: Config | str | os.PathLike, observers=None):
        if not isinstance(config, Config):
            config = load_config(config)
        self_test()
        self.events = ev.Dispatcher(observers)
        # Enrolling (no certificate yet): serve nothing until a reload validates one.
        self.enrolling = awaiting_enrollment(config)
        # the same validation as `medtls check` and reload
        self.rt = Generation(config, 1) if self.enrolling else validate(config, 1)
        self._started = False
        EventLoop.__init__(self)
        self.listeners: dict[ListenerSpec, socket.socket] = {}
        self.conns: dict[int, Conn] = {}
        self.ids = itertools.count(1)
        self.scratch = memoryview(bytearray(262144))
        self.pools: dict[int, BufferPool] = {}  # buffer_size -> pool (a reload may change it)
        self.started = time.time()
        self.stopping = False
        self.drain_deadline = 0.0
        self._next_timer = 0.0
        self.admission = Admission(config.limits)
        self.backoff = AcceptBackoff()
        self._malloc_trim = _malloc_trim()
        self._closed_since_trim = 0
        self._next_trim = 0.0
        self._next_ticket_keys = time.monotonic() + config.session_lifetime
        # set by medtls.ops: callable -> reason string while certificates must not be validated
        self.validation_gate = None
        self._actions = {
            cx.CONNECT: self._connect,
            cx.START_TLS_CLIENT: self._start_tls_client,
            cx.START_TLS_SERVER: self._start_tls_server,
            cx.CONTINUE_HANDSHAKE: self._continue_handshake,
            cx.CHECK_IDENTITY: self._check_identity,
            cx.FLUSH_TLS: self._flush_tls,
            cx.TLS_OK: self._tls_ok,
            cx.START_RELAY: self._start_relay,
            cx.KEEP_SESSION: self._keep_session,
            cx.FAIL: self._report_failure,
            cx.CLOSE_CLEAN: self._close_clean,
            cx.CLOSE_IF_QUIET: self._close_if_quiet,
            cx.RESET_BOTH: self._reset_both,
            cx.LOG_RESULT: self._log_result,
            cx.READ_FIRST: self._read_first,
            cx.ABORT_DEVICE: self._abort_device,
            cx.READ_PEER_FIRST: self._read_peer_first,
            cx.START_ARTIM: self._start_artim,
            cx.CLOSE_GRACEFUL: self._close_graceful,
        }

    @property
    def config(self) -> Config:
        return self.rt.config

    def add_observer(self, observer: ev.Observer) -> None:
        self.events.observers.append(observer)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the listeners (raises OSError with a clear message on failure)."""
        self._started = True
        if self.enrolling:
            log.warning("%s", self.enrolling)
        else:
            self._sync_listeners(self.rt.config)
        for w in self.rt.config.warnings():
            log.warning("%s", w)
        self.events.reload_ok(self.rt.generation)

    def _sync_listeners(self, config: Config) -> None:
        want = listener_specs(config)
        opened = open_missing(want, self.listeners, config)
        for spec in list(self.listeners):
            if spec not in want:
                s = self.listeners.pop(spec)
                self._poll_del(s.fileno())
                s.close()
            else:
                # Accepted sockets inherit these options from their listener (a reload may
                # change limits.keepalive).
                with contextlib.suppress(OSError):
                    set_options(self.listeners[spec], config.limits.keepalive)
        for spec, s in opened.items():
            self.listeners[spec] = s
            self._poll_add(s.fileno(), READ, (spec, s))
            addr = s.getsockname()[:2]
            log.info("listening %s on %s:%d", spec.name, addr[0], addr[1])
            self.events.listener_ready(spec.name, spec.direction, addr)

    def serve_forever(self) -> None:
        """Open listeners (if not yet) and run until stop() completes the drain."""
        if not self._started:
            self.start()
        self._loop_thread = threading.get_ident()
        if threading.current_thread() is threading.main_thread():
            self.install_signals(
                {
                    signal.SIGHUP: self._reload_in_loop,
                    signal.SIGTERM: self._stop_in_loop,
                    signal.SIGINT: self._stop_in_loop,
                }
            )
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # GC's full collections, which otherwise walk every module object (a latency spike).
        gc.collect()
        gc.freeze()
        if self._malloc_trim is not None:
            self._malloc_trim(0)  # what start-up (YAML, certificates, contexts) left freed
        try:
            while True:
                if self.stopping:
                    if not self.conns or time.monotonic() >= self.drain_deadline:
                        break
                    # The loop's poll wakes by the drain deadline at the latest.
                    self._next_timer = min(self._next_timer, self.drain_deadline)
                self._run_once()
        finally:
            self._close_all()

    def stop(self) -> None:
        """Stop accepting and drain (limits.drain_timeout), from any thread."""
        if threading.get_ident() == self._loop_thread:
            self._stop_in_loop()
        else:
            self.call_soon(self._stop_in_loop)

    def _stop_in_loop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.drain_deadline = time.monotonic() + self.config.limits.drain_timeout
        for s in self.listeners.values():
            self._poll_del(s.fileno())
            s.close()
        self.listeners.clear()
        log.info(
            "stopping: listeners closed, draining %d connection(s) for up to %gs",
            len(self.conns), self.config.limits.drain_timeout,
        )  # fmt: skip
        self.events.stopping()

    def reload(self) -> bool:
        """Re-read the configuration file and TLS material; keep the old one on any error."""
        return bool(self.call_and_wait(self._reload_in_loop, 30))

    def _reload_in_loop(self) -> bool:
        self.events.reloading()
        path = self.config.path
        try:
            config = load_config(path)
            rt = validate(config, self.rt.generation + 1)  # as `medtls check` and start
            if config.workers != self.config.workers:
                log.warning(
                    "reload: workers change needs a restart; keeping %d", self.config.workers
                )
            self._sync_listeners(config)
        except ConfigError as e:
            msg = "; ".join(str(p) for p in e.problems)
            return self._reload_failed(f"{path}: {msg}")
        except (TLSSetupError, OSError) as e:
            return self._reload_failed(str(e))
        except Exception as e:  # a loader bug must still answer `medtls reload`, not hang it
            log.exception("reload: internal error")
            return self._reload_failed(f"{path}: internal error: {type(e).__name__}: {e}")
        self.rt = rt
        self.enrolling = None
        self._next_ticket_keys = time.monotonic() + config.session_lifetime  # new contexts
        for w in config.warnings():
            log.warning("%s", w)
        log.info("reload: configuration generation %d active (%s)", rt.generation, path)
        self.events.reload_ok(rt.generation)
        return True

    def _reload_failed(self, msg: str) -> bool:
        log.error("reload rejected, keeping generation %d: %s", self.rt.generation, msg)
        self.events.reload_failed(msg)
        return False

    def _close_all(self) -> None:
        # What is still open at the drain timeout was cut: RST, so no device takes a cut
        # transfer for a complete one (`result=shutdown`).
        for c in list(self.conns.values()):
            try:
                self._event(
                    c, cx.DRAIN_DEADLINE, detail=c.detail or "cut at stop (limits.drain_timeout)"
                )
            except Exception:
                self._internal_error(c, "drain")
        for s in self.listeners.values():
            self._poll_del(s.fileno())
            s.close()
        self.listeners.clear()
        self._close_loop()

    # ------------------------------------------------------------------ loop

    def _run_once(self) -> None:
        now = time.monotonic()
        busy = self.conns or self.backoff.paused
        timeout = max(0.0, min(0.5, self._next_timer - now)) if busy else 1.0
        fdmap = self.fdmap
        for fd, event in self.ep.poll(timeout):
            data = fdmap.get(fd, GONE)
            if data.__class__ is Side:
                c = data.conn
                if c.state != _CLOSED:
                    mask = event & (READ | WRITE)
                    if event & ERRHUP:
                        mask = READ | WRITE
                    try:
                        self._on_io(c, data, mask)
                    except Exception:  # a bug or a peer we did not foresee: this one goes
                        self._internal_error(c, "i/o")
            elif data is None:
                self._drain_wakeups(log)
            elif data is not GONE:
                try:
                    self._accept(data[1], data[0])
                except Exception:
                    log.exception("internal error accepting on %s", data[0].name)
        now = time.monotonic()
        if now >= self._next_timer:
            self._timers(now)
            self._next_timer = now + 0.25

    def _trim_memory(self) -> None:
        freed = [pool.trim_if_idle() for pool in self.pools.values()]
        if self._malloc_trim is not None and (
            any(freed) or self._closed_since_trim >= TRIM_AFTER_CLOSED
        ):
            self._closed_since_trim = 0
            self._malloc_trim(0)

    def _timers(self, now: float) -> None:
        for spec, lsock in self.backoff.due(now):
            if self.listeners.get(spec) is lsock:  # not closed by a reload or stop meanwhile
                self._poll_add(lsock.fileno(), READ, (spec, lsock))
        self.admission.fit(self.config.limits)  # a reload may have changed the limits
        if now >= self._next_trim:
            self._next_trim = now + TRIM_INTERVAL
            self._trim_memory()
        lifetime = self.config.session_lifetime
        if lifetime and now >= self._next_ticket_keys:
            self._next_ticket_keys = now + lifetime
            for ctx in self.rt.server_contexts():
                with contextlib.suppress(TLSSetupError):  # self_test() already proved the hooks
                    rotate_ticket_keys(ctx)
        idle = self.config.limits.idle_timeout
        for c in list(self.conns.values()):
            try:
                state = c.state
                if state in cx.WITH_DEADLINE and now >= c.deadline:
                    if state == _AWAIT_CLOSE:  # ARTIM: the requester did not close; we do
                        self._event(c, cx.TIMEOUT)
                        continue
                    if state == _REFUSING:
                        who = "peer" if c.client.tls is not None else "device"
                        detail = f"{c.detail}; no complete first message from the {who}"
                        self._event(c, cx.TIMEOUT, c.refused, detail)
                        continue
                    if state == _READING_FIRST:
                        detail = "no complete A-ASSOCIATE-RQ from the client in time"
                        self._event(c, cx.TIMEOUT, detail=detail)
                        continue
                    if state in _DIALLING:
                        detail = f"connect to {_fmt(c.upstream)} timed out"
                    else:
                        detail = "TLS handshake timed out"
                    self._event(c, cx.TIMEOUT, detail=detail)
                elif state in _RELAYING and idle and now - c.last_activity >= idle:
                    self._event(c, cx.IDLE, detail=f"idle for {idle:g}s")
                elif (
                    state in _RELAYING
                    and c.bios_renewed < c.last_activity
                    and now - c.last_activity >= BIO_RENEW_IDLE
                    and c.tls_side is not None
                ):
                    self._renew_bios(c, now)
            except Exception:
                self._internal_error(c, "timer")

    # ------------------------------------------------------------------ accept

    def _accept(self, lsock: socket.socket, spec: ListenerSpec) -> None:
        for i in range(64):
            try:
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in ACCEPT_RESOURCE_ERRORS:
                    until = self.backoff.pause(
                        lsock, spec, e.strerror or str(e), progress=i > 0, now=time.monotonic()
                    )
                    if until is not None:
                        self._poll_del(lsock.fileno())
                        self._next_timer = min(self._next_timer, until)
                return
            try:
                self._new_conn(sock, addr, spec)
            except Exception:
                self._setup_crashed(sock)
        self.backoff.accepted(spec)

    def _new_conn(self, sock: socket.socket, addr, spec: ListenerSpec) -> None:
        rt = self.rt
        cfg = rt.config
        # TCP_NODELAY and keepalive came with the socket from its listener (`_sync_listeners`).
        sock.setblocking(False)
        client = (unmap_v4(addr[0]), addr[1])
        if cfg.mode == "explicit":
            dst = sock.getsockname()[:2]
        elif cfg.interception == "dnat":
            try:
                dst = original_dst_nat(sock)
            except OSError:
                dst = sock.getsockname()[:2]
        else:
            dst = sock.getsockname()[:2]
        dst = (unmap_v4(dst[0]), dst[1])
        route: OutboundPeer | InboundPort | None
        if spec.entry:
            entries = cfg.outbound if spec.direction == "outbound" else cfg.inbound
            route = next((e for e in entries if e.name == spec.entry), None)
        elif spec.direction == "outbound":
            route = route_outbound(cfg, dst[0], dst[1])
        else:
            route = route_inbound(cfg, dst[1])
        plaintext = isinstance(route, OutboundPeer) and route.plaintext
        info = ev.ConnInfo(
            id=next(self.ids), direction=spec.direction, route=route.name if route else "",
            client=client, destination=dst, started=time.time(), plaintext=plaintext,
        )  # fmt: skip
        c = Conn(info, rt, sock, cfg.limits.buffer_size)
        c.route = route
        if route is not None and not plaintext:
            c.protocol = route.protocol
            c.answering = "" if route.protocol == "tcp" else route.protocol
        refusal = self.admission.refusal(len(self.conns), spec.direction, source_key(client[0]))
        self.conns[info.id] = c
        self.events.connection_opened(info)
        if refusal is not None:
            self._event(c, cx.REFUSED, *refusal)
            return
        if route is None:
            table = "outbound peer" if spec.direction == "outbound" else "inbound port"
            detail = f"destination not in the {table} table (default deny)"
            self._event(c, cx.NO_ROUTE, detail=detail)
            return
        gate = self.validation_gate
        why = gate() if gate is not None and not plaintext else None
        if why:
            self._event(c, cx.GATE_CLOSED, detail=why)
        elif spec.direction == "inbound":
            self._event(c, cx.ROUTE_INBOUND)
        else:
            self._event(c, cx.ROUTE_PLAINTEXT if plaintext else cx.ROUTE_OUTBOUND)

    # ------------------------------------------------------------------ state changes

    def _event(self, c: Conn, event: str, reason: str = "", detail: str = "") -> None:
        """Feed `event` to c's state machine and perform the actions it returns, in order."""
        t = cx.step(c.state, event, c.answering, c.info.direction == "inbound")
        c.state = t.next
        if detail:
            c.detail = detail
        result = cx.result_of(t, reason)
        actions = self._actions
        for action in t.actions:
            actions[action](c, result)

    def _internal_error(self, c: Conn, where: str) -> None:
        """An unexpected exception while handling `c`: reset this connection, keep the loop."""
        log.exception("internal error in connection %d (%s): resetting it", c.info.id, where)
        if self.conns.get(c.info.id) is not c:
            return  # already closed and gone
        try:
            self._event(c, cx.INTERNAL_ERROR, detail="internal error (see the log)")
        except Exception:  # closing failed too (or it was half closed): drop it the hard way
            c.state = _CLOSED
            self.conns.pop(c.info.id, None)
            self.admission.end(c.info.id)
            for side in (c.client, c.server):
                if side is not None:
                    self._poll_del(side.fd)
                    abort(side.sock)

    def _setup_crashed(self, sock: socket.socket) -> None:
        c = next((c for c in self.conns.values() if c.client.sock is sock), None)
        if c is None:
            log.exception("internal error setting up a connection")
            abort(sock)
        else:
            self._internal_error(c, "setup")

    # ------------------------------------------------------------------ actions: setup

    def _connect(self, c: Conn, _result: str = "") -> None:
        cfg = c.rt.config
        route = c.route
        tproxy = cfg.mode == "transparent" and cfg.interception == "tproxy"
        if c.info.direction == "outbound":
            c.upstream = (route.address, route.tls_port)
        elif cfg.mode == "explicit":
            c.upstream = (cfg.device.ip, route.device_port)
        else:
            c.upstream = (c.info.destination[0], route.device_port)
        spoof = c.info.client[0] if tproxy else None
        try:
            sock = upstream_socket(c.upstream[0], cfg.limits.keepalive, spoof)
        except OSError as e:
            detail = f"cannot create upstream socket: {e.strerror}"
            self._event(c, cx.CONNECT_FAILED, detail=detail)
            return
        c.server = Side(c, "server", sock)
        c.deadline = time.monotonic() + cfg.limits.connect_timeout
        err = sock.connect_ex(c.upstream)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            detail = f"connect to {_fmt(c.upstream)}: {os.strerror(err)}"
            self._event(c, cx.CONNECT_FAILED, detail=detail)
            return
        self._set_mask(c.server, WRITE)
        self._set_mask(c.client, 0)

    def _connected(self, c: Conn) -> None:
        err = c.server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            detail = f"connect to {_fmt(c.upstream)}: {os.strerror(err)}"
            self._event(c, cx.CONNECT_FAILED, detail=detail)
        else:
            self._event(c, cx.CONNECTED)

    def _start_tls_client(self, c: Conn, _result: str = "") -> None:
        route = c.route
        t = c.tls_side = c.server
        t.start_tls(
            c.rt.outbound_ctx[route.name],
            server=False,
            sni=route.sni,
            session=sessions.offer(c.rt, route.name, time.monotonic()),
        )
        c.deadline = time.monotonic() + c.rt.config.limits.handshake_timeout
        self._set_mask(c.client, 0)
        self._continue_handshake(c)

    def _start_tls_server(self, c: Conn, _result: str = "") -> None:
        t = c.tls_side = c.client
        t.start_tls(c.rt.inbound_ctx[c.route.name], server=True)
        c.judge = judge_client(t.tls, lambda der: self._judge_client(c, der))
        self.admission.begin(c.info.id, source_key(c.info.client[0]), c.t0)
        c.deadline = time.monotonic() + c.rt.config.limits.handshake_timeout
        # A TLS server speaks only after the ClientHello, which has usually arrived by the time
        # the connection is accepted: read it now; if not, wait for it without a do_handshake()
        # that could only ask for more input.
        try:
            t.recv_tls(self.scratch)
        except RelayError as e:
            self._handshake_reset(c, e)
            return
        if t.inc.pending or t.raw_eof:
            self._hello(c)
        else:
            self._set_mask(t, READ)

    def _hello(self, c: Conn) -> None:
        # The BIO holds exactly what the last read put in the scratch buffer: the ClientHello.
        t = c.tls_side
        n = t.inc.pending
        if c.rt.config.session_lifetime and offers_psk(bytes(self.scratch[:n])):
            with contextlib.suppress(TLSSetupError):  # self_test() proved the hooks
                issue_no_ticket(t.tls)
        self._event(c, cx.HELLO)

    def _continue_handshake(self, c: Conn, _result: str = "") -> None:
        try:
            self._handshake_step(c)
        except RelayError as e:
            self._handshake_reset(c, e)

    def _handshake_reset(self, c: Conn, e: RelayError) -> None:
        """A reset (or a send failure) before the handshake completed is a failed handshake:
        observers, and with them the audit trail's node-authentication failure, hear of it."""
        self._event(c, cx.RESET, detail=f"{e} during the TLS handshake")

    def _handshake_step(self, c: Conn) -> None:
        t = c.tls_side
        try:
            t.tls.do_handshake()
        except ssl.SSLWantReadError:
            t.flush()
            self._set_mask(t, (0 if t.raw_eof else READ) | (WRITE if t.wblocked else 0))
            if t.raw_eof:
                self._event(
                    c, cx.HANDSHAKE_FAILED, ev.HANDSHAKE_ERROR,
                    "connection closed during TLS handshake",
                )  # fmt: skip
            return
        except ssl.SSLError as e:
            why = c.refusal or classify_tls_error(e)
            self._event(c, cx.HANDSHAKE_FAILED, *why)  # FLUSH_TLS: our alert
            return
        if c.judge:
            forget_client(c.judge)
            c.judge = 0
        if t is c.client:
            t.flush()  # a server's last flight (none in TLS 1.3 without tickets)
        # A client's last flight (Certificate/Finished) is sent by the first relay step, in one
        # segment with the first application data that is already waiting.
        self._event(c, cx.HANDSHAKE_DONE)

    def _check_identity(self, c: Conn, _result: str = "") -> None:
        t = c.tls_side
        c.version = t.tls.version() or ""
        c.cipher = (t.tls.cipher() or ("",))[0]
        der = t.tls.getpeercert(binary_form=True)
        if der is None:
            self._event(c, cx.IDENTITY_REFUSED, ev.NO_CERTIFICATE, "peer sent no certificate")
            return
        try:
            ident: CertIdentity = peer_identity(der)
        except CertParseError as e:
            detail = f"peer certificate refused: {e}"
            self._event(c, cx.IDENTITY_REFUSED, ev.BAD_CERTIFICATE, detail)
            return
        c.peer = ident.describe()
        if t.tls.session_reused:
            c.resumed = True
            expired = sessions.expired_peer(t.tls, time.time())
            if expired:
                self._event(c, cx.IDENTITY_REFUSED, ev.CERT_EXPIRED, expired)
                return
        route = c.route
        if isinstance(route, OutboundPeer):
            bad = verify_mismatches(route.verify, ident)
            if bad:
                detail = f"server {c.peer}: " + "; ".join(bad)
                self._event(c, cx.IDENTITY_REFUSED, ev.IDENTITY_MISMATCH, detail)
            else:
                self._event(c, cx.PEER_VERIFIED)
        else:
            rule = acl_allows(route, ident, c.info.client[0])
            if rule is None:
                detail = f"client {c.peer} not allowed on {route.name}"
                self._event(c, cx.ACL_DENIED, detail=detail)
            elif binds_calling_ae(route, rule):
                c.ae_rule = route.allow[rule]
                self._event(c, cx.CLIENT_AUTHORIZED_AE)
            else:
                self._event(c, cx.CLIENT_AUTHORIZED)

    def _judge_client(self, c: Conn, der: bytes) -> str | None:
        """Inbound, in the handshake (tls.openssl's verify callback): the certificate OpenSSL
        verified against the port's allow: list. None, or the alert to refuse it with. A bug
        here fails this handshake alone (internal_error), as the loop guard does elsewhere."""
        try:
            try:
                ident = peer_identity(der)
            except CertParseError as e:
                c.refusal = (ev.BAD_CERTIFICATE, f"peer certificate refused: {e}")
                return BAD_CERTIFICATE
            if acl_allows(c.route, ident, c.info.client[0]) is None:
                c.peer = ident.describe()
                c.refusal = (ev.ACL_DENIED, f"client {c.peer} not allowed on {c.route.name}")
                return ACCESS_DENIED
            return None
        except Exception:
            log.exception(
                "internal error in connection %d (certificate judge): refusing it", c.info.id
            )
            c.refusal = (ev.INTERNAL_ERROR, "internal error (see the log)")
            raise  # tls.openssl's callback turns it into a failed handshake, never into C

    def _flush_tls(self, c: Conn, _result: str = "") -> None:
        # Our alert, or a client's last flight before a policy failure.
        t = c.tls_side
        if c.refusal is not None and c.refusal[0] == ev.ACL_DENIED and t.out.pending:
            t.out.write(access_denied_alert(t.out.read()))  # TLS 1.2: see tls.openssl
        with contextlib.suppress(RelayError):
            t.flush()

    def _tls_ok(self, c: Conn, _result: str = "") -> None:
        self.admission.end(c.info.id)  # authenticated: out of the handshake budget
        self.events.tls_established(c.info, c.version, c.cipher, c.peer)

    def _start_relay(self, c: Conn, _result: str = "") -> None:
        pool = self.pools.get(c.size)
        if pool is None:
            pool = self.pools[c.size] = BufferPool(c.size)
        c.pipes = (Pipe(c.client, c.server, pool), Pipe(c.server, c.client, pool))
        c.last_activity = time.monotonic()
        if c.first is not None:
            # Inbound, calling AE checked: the client's first message goes to the device first.
            p = c.pipes[0]
            p.mv = pool.take()
            p.mv[: len(c.first)] = c.first
            p.end = len(c.first)
        elif c.protocol != "tcp":
            c.first = bytearray()
        if c.client.tls is None and c.tls_side is not None:
            # Outbound: the device usually sent its first bytes while we shook hands; read them
            # now, so they leave with our Finished instead of one event loop turn later.
            try:
                relay.recv_plain(c.client, c.pipes[0])
            except RelayError as e:
                self._relay_failed(c, e)
                return
        self._relay(c)

    def _keep_session(self, c: Conn, _result: str = "") -> None:
        # Outbound: a TLS 1.3 ticket arrives with the first data (or with the close).
        t = c.tls_side
        if t is not None and t is c.server:
            sessions.keep(c.rt, c.route.name, t.tls, time.monotonic(), c.resumed)

    # ------------------------------------------------------------------ io

    def _on_io(self, c: Conn, side: Side, mask: int) -> None:
        if mask == READ and c.steady:
            pipe = c.pipes[0] if side is c.client else c.pipes[1]
            dst = pipe.dst
            if not pipe.end and not dst.wblocked and not dst.pending_out:
                try:
                    if relay.forward(side, pipe, self.scratch):
                        c.last_activity = time.monotonic()
                        return
                except RelayError as e:
                    self._relay_failed(c, e)
                    return
                self._relay(c)
                return
        try:
            if mask & WRITE:
                side.wblocked = False
            state = c.state
            if state in _RELAYING:
                if mask & READ:
                    if side.tls is not None:
                        side.recv_tls(self.scratch)
                    else:
                        relay.recv_plain(side, c.pipes[0] if side is c.client else c.pipes[1])
                self._relay(c)
            elif state in _HANDSHAKING:
                try:
                    if mask & READ:
                        side.recv_tls(self.scratch)
                    if state == _HANDSHAKE:
                        self._handshake_step(c)
                    elif side.inc.pending or side.raw_eof:
                        self._hello(c)
                except RelayError as e:
                    self._handshake_reset(c, e)
            elif state in _DIALLING and side is c.server:
                self._connected(c)
            elif state == _REFUSING:
                self._refusal_read(c)
            elif state == _AWAIT_CLOSE:
                self._await_close_read(c)
            elif state == _READING_FIRST:
                self._peer_first_step(c)
        except RelayError as e:
            self._relay_failed(c, e)

    def _relay(self, c: Conn) -> None:
        pipes = c.pipes
        if c.first is not None:  # a dicom/hl7 route before its first message is read
            try:
                self._keep_first(c)
            except RelayError as e:
                self._relay_failed(c, e)
                return
        try:
            relay.pump(pipes)
        except RelayError as e:
            self._relay_failed(c, e)
            return
        c.last_activity = time.monotonic()
        t = c.tls_side
        if t is not None and t.handshake_bios and not t.inc.pending and not t.pending_out:
            t.handshake_bios = False
            self._renew_bios(c, c.last_activity)
        if c.state == _RELAY_OPENING:
            if t is not None:
                p = pipes[1 if t is c.server else 0]
                if p.count or p.end:
                    if c.names is not None:
                        c.first = None
                    self._event(c, cx.FIRST_DATA)
        elif not c.steady and c.first is None and (t is None or not t.handshake_bios):
            c.steady = True
        a, b = pipes
        if a.src.eof_in and b.src.eof_in and relay.finished(pipes):
            self._event(c, cx.EOF)
            return
        # Interest rarely changes (only on backpressure or EOF): skip the call when it does not.
        side = c.client
        mask = relay.interest(side, a)
        if mask != side.mask:
            self._set_mask(side, mask)
        side = c.server
        mask = relay.interest(side, b)
        if mask != side.mask:
            self._set_mask(side, mask)

    def _renew_bios(self, c: Conn, now: float) -> None:
        c.bios_renewed = now
        t = c.tls_side
        if t.tls is not None and not t.shut_out and not t.pending_out:
            with contextlib.suppress(TLSSetupError):  # self_test() already proved the hooks
                t.renew_bios()

    def _relay_failed(self, c: Conn, e: RelayError) -> None:
        if (e.tls_error is not None and c.state == cx.RELAY_OPENING
                and c.tls_side is c.server and c.version == "TLSv1.3"):  # fmt: skip
            # TLS 1.3: a server rejects our certificate only after our handshake completed.
            # (Not so in TLS 1.2, nor for our server side: an alert there is no rejection,
            # e.g. a client aborting after we refused its renegotiation.)
            reason, detail = classify_tls_error(e.tls_error)
            if reason != ev.HANDSHAKE_ERROR:
                # What the device wrote went into a connection the peer refused: not delivered.
                into_tls = c.pipes[0]
                c.not_delivered, into_tls.count = into_tls.count, 0
                self._event(c, cx.REJECTED, reason, detail)
                return
        self._event(c, cx.TRUNCATED if isinstance(e, Truncated) else cx.RESET, detail=str(e))

    # ------------------------------------------------------------------ refusals in protocol

    def _keep_first(self, c: Conn) -> None:
        """Copy what the initiator sent since the last call (still in the pipe, not yet pumped;
        a TLS initiator's is decrypted into the pipe first, as pump() would)."""
        p = c.pipes[0]
        relay.tls_read_first(c.client, p)
        first = c.first
        new = p.count + p.end - p.start - len(first)
        if new > 0:
            if new > p.end - p.start or len(first) + new > FIRST_MESSAGE_CAP[c.protocol]:
                # longer than any first message we answer: a refusal is a reset
                c.first = None
                if c.state == _RELAY_OPENING:
                    c.answering = ""
                if c.names is None:
                    c.names = {}
                return
            first += p.mv[p.end - new : p.end]
        if self._learn_names(c) and c.state == cx.RELAY:
            c.first = None

    def _learn_names(self, c: Conn) -> bool:
        """Read the names of the first message once it is in `c.first` (True once known)."""
        if c.names is None and c.first:
            names = first_names(c.protocol, bytes(c.first))
            if names is None:
                return False
            c.names = names
            self.events.first_message(c.info, names)
        return c.names is not None

    def _tls_first_read(self, c: Conn, cap: int) -> str:
        """Inbound: decrypt the client's first bytes into c.first (at most `cap`); "" or why the
        stream ended."""
        t = c.client
        first = c.first
        try:
            t.recv_tls(self.scratch)
        except RelayError as e:
            return str(e)
        while len(first) < cap:
            try:
                data = t.tls.read(cap - len(first))
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                return "client closed before its first message was complete"
            except ssl.SSLEOFError:
                return "client: TLS stream ended without close_notify"
            except ssl.SSLError as e:
                return f"client: TLS error: {e.reason or e}"
            if not data:
                return "client closed before its first message was complete"
            first += data
        with contextlib.suppress(RelayError):
            t.flush()  # anything TLS wants to say back (a key update)
        return ""

    def _read_peer_first(self, c: Conn, _result: str = "") -> None:
        """Inbound, calling AE titles bound: read the client's A-ASSOCIATE-RQ before anything
        reaches the device (bounded by the pipe buffer and limits.handshake_timeout)."""
        c.first = bytearray()
        c.deadline = time.monotonic() + c.rt.config.limits.handshake_timeout
        self._set_mask(c.client, READ)
        self._peer_first_step(c)

    def _peer_first_step(self, c: Conn) -> None:
        cap = min(FIRST_MESSAGE_CAP["dicom"], c.size)
        why = self._tls_first_read(c, cap)
        if not self._learn_names(c):
            if why or len(c.first) >= cap:
                self._event(c, cx.RESET, detail=why or f"first message longer than {cap} bytes")
            return
        calling = c.names.get("calling_ae")
        if calling is None:
            self._event(c, cx.RESET, detail="first message is not an A-ASSOCIATE-RQ")
        elif calling_ae_allowed(c.ae_rule, calling):
            self._set_mask(c.client, 0)
            self._event(c, cx.FIRST_MESSAGE)
        else:
            detail = f"calling AE title {calling} not allowed for {c.peer} on {c.route.name}"
            self._event(c, cx.AE_REFUSED, detail=detail)

    def _read_first(self, c: Conn, result: str) -> None:
        """The peer leg failed on an answering route: drop it, and answer the device's first
        message in its protocol once it is complete (bounded in size and time)."""
        c.refused = result
        server = c.server
        if server is not None:
            self._poll_del(server.fd)
            abort(server.sock)
            server.conn = None
            c.server = None
        if c.first is None:
            c.first = bytearray()
        c.deadline = time.monotonic() + c.rt.config.limits.handshake_timeout
        self._set_mask(c.client, READ)
        self._refusal_read(c)

    def _refusal_read(self, c: Conn) -> None:
        if c.client.tls is not None:
            self._refusal_read_tls(c)
            return
        first = c.first
        cap = FIRST_MESSAGE_CAP[c.answering]
        sock = c.client.sock
        why = ""
        while len(first) < cap:
            try:
                chunk = sock.recv(cap - len(first))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                why = f"device: {e.strerror or e}"
                break
            if not chunk:
                why = "device closed before its first message was complete"
                break
            first += chunk
        if not why:
            try:
                got = answer(
                    c.answering, bytes(first), c.refused, f"MEDTLS{c.info.id}",
                    time.strftime("%Y%m%d%H%M%S", time.gmtime()),
                )  # fmt: skip
            except NotAnswerable as e:
                got, why = None, f"not answered: {e}"
            if got is None and not why:
                if len(first) < cap:
                    return  # wait for more (or the deadline)
                why = f"not answered: first message longer than {cap} bytes"
        if why:
            self._event(c, cx.RESET, c.refused, f"{c.detail}; {why}")
            return
        self._learn_names(c)
        data, what = got
        try:
            sent = sock.send(data)
        except OSError as e:
            sent, what = -1, f"device: {e.strerror or e}"
        if sent != len(data):
            self._event(c, cx.RESET, c.refused, f"{c.detail}; answer not sent: {what}")
            return
        self._event(c, cx.ANSWERED, c.refused, f"{c.detail}; device answered {what}")

    def _refusal_read_tls(self, c: Conn) -> None:
        """Inbound: answer the TLS client's first message inside TLS, then close_notify + FIN."""
        cap = FIRST_MESSAGE_CAP[c.answering]
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        why = ""
        got = None
        for attempt in (0, 1):
            try:
                got = answer(c.answering, bytes(c.first), c.refused, f"MEDTLS{c.info.id}", stamp)
            except NotAnswerable as e:
                why = f"not answered: {e}"
                break
            if got is not None or attempt:
                break
            why = self._tls_first_read(c, cap)
            if why:
                break
        if got is None and not why:
            if len(c.first) < cap:
                return  # wait for more (or the deadline)
            why = f"not answered: first message longer than {cap} bytes"
        if why:
            self._event(c, cx.RESET, c.refused, f"{c.detail}; {why}")
            return
        self._learn_names(c)
        data, what = got
        t = c.client
        try:
            t.tls.write(data)
            if c.answering not in cx.AWAITS_CLOSE:
                relay.send_close_notify(t.tls)
            t.flush()
        except (ssl.SSLError, RelayError) as e:
            self._event(c, cx.RESET, c.refused, f"{c.detail}; answer not sent: {e}")
            return
        if t.pending_out:
            self._event(c, cx.RESET, c.refused, f"{c.detail}; answer not sent: {what}")
            return
        t.shut_out = c.answering not in cx.AWAITS_CLOSE
        self._event(c, cx.ANSWERED, c.refused, f"{c.detail}; peer answered {what}")

    def _start_artim(self, c: Conn, _result: str = "") -> None:
        c.deadline = time.monotonic() + ARTIM_SECONDS
        self._set_mask(c.client, READ)
        self._await_close_read(c)

    def _await_close_read(self, c: Conn) -> None:
        """After the A-ASSOCIATE-RJ: read and drop what the requester sends until it closes."""
        side = c.client
        try:
            while True:
                if side.tls is None:
                    chunk = side.sock.recv(16384)
                else:
                    if not side.tls.pending():
                        side.recv_tls(self.scratch)
                    chunk = side.tls.read(16384)
                if not chunk:
                    self._event(c, cx.EOF)
                    return
                c.dropped += len(chunk)
                if c.dropped > AWAIT_CLOSE_CAP:
                    self._reset_after_answer(c, f"more than {AWAIT_CLOSE_CAP} bytes")
                    return
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            if side.tls is not None and side.raw_eof:
                self._event(c, cx.EOF)  # closed without close_notify: closed all the same
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self._event(c, cx.EOF)
        except (OSError, RelayError) as e:  # ssl.SSLError is an OSError
            self._reset_after_answer(c, str(e))

    def _reset_after_answer(self, c: Conn, why: str) -> None:
        # The connection line went out with the answer: this is said on a line of its own.
        log.warning("connection %d: reset after the answer: %s", c.info.id, why)
        self._event(c, cx.RESET)

    def _close_graceful(self, c: Conn, _result: str = "") -> None:
        self._close(c, clean=True, notify=True)

    def _abort_device(self, c: Conn, _result: str = "") -> None:
        """The peer leg of an association was lost: A-ABORT and FIN to the device (if every byte
        for it was delivered, so the A-ABORT starts a PDU of its own, as far as we can tell
        without reading the stream), RST to the peer."""
        server = c.server
        if server is not None:
            self._poll_del(server.fd)
            abort(server.sock)
            server.conn = None
            c.server = None
        to_device = c.pipes[1]
        clean = False
        if to_device.start == to_device.end and not c.client.shut_out:
            pdu = a_abort()
            with contextlib.suppress(OSError):
                clean = c.client.sock.send(pdu) == len(pdu)
        if clean:
            c.detail = f"{c.detail}; device sent A-ABORT"
        self._close(c, clean=clean, notify=False)

    # ------------------------------------------------------------------ actions: end

    def _report_failure(self, c: Conn, result: str) -> None:
        self.events.handshake_failed(c.info, result, c.detail)

    def _close_clean(self, c: Conn, _result: str = "") -> None:
        self._close(c, clean=True, notify=False)

    def _close_if_quiet(self, c: Conn, _result: str = "") -> None:
        """limits.idle_timeout: close_notify + FIN when no byte is in flight, else RST."""
        self._close(c, clean=_quiet(c), notify=True)

    def _reset_both(self, c: Conn, _result: str = "") -> None:
        self._close(c, clean=False, notify=False)

    def _close(self, c: Conn, clean: bool, notify: bool) -> None:
        """Close both sides: FIN (with close_notify if `notify`) only when clean, else RST."""
        fdmap = self.fdmap
        for side in (c.client, c.server):
            if side is None:
                continue
            # close() takes the socket out of the epoll set: no epoll_ctl(DEL) needed.
            fdmap.pop(side.fd, None)
            side.mask = 0
            if not clean:
                abort(side.sock)
            elif notify and side.tls is not None and not side.shut_out:
                _close_notify_now(side)
            else:
                side.sock.close()
        for side in (c.client, c.server):
            if side is not None:
                side.conn = None  # no Conn <-> Side cycle: freed by refcount, not by the GC
        self._closed_since_trim += 1
        if c.judge:
            forget_client(c.judge)
            c.judge = 0
        self.conns.pop(c.info.id, None)
        if self.admission.pending:
            self.admission.end(c.info.id)
        if c.pipes:
            for p in c.pipes:
                p.release()

    def _log_result(self, c: Conn, result: str) -> None:
        up = c.pipes[0].count if c.pipes else 0
        down = c.pipes[1].count if c.pipes else 0
        dur = time.monotonic() - c.t0
        level = logging.INFO if result == ev.RESULT_OK else logging.WARNING
        if conn_log.isEnabledFor(level):
            conn_log.log(level, "%s", self._conn_line(c, up, down, dur, result))
        self.events.connection_closed(c.info, up, down, dur, result)

    def _conn_line(self, c: Conn, up: int, down: int, dur: float, result: str) -> str:
        i = c.info
        route = c.route
        device_port = route.device_port if isinstance(route, InboundPort) else i.destination[1]
        return connection_line(
            i, device_port, c.peer, c.version, c.cipher, up, down, dur, result, c.detail,
            c.resumed, c.upstream, c.not_delivered, c.names,
        )  # fmt: skip

    # ------------------------------------------------------------------ state

    def certificates(self) -> list:
        """The CertInfo list of the generation in force (parsed once, when it was built)."""
        return list(self.rt.certificates)

    def snapshot(self) -> dict:
        """Plain-data view of the current state (safe to call from another thread)."""
        rt = self.rt
        conns = list(self.conns.values())
        by_dir: dict[str, int] = {}
        by_route: dict[str, int] = {}
        states: dict[str, int] = {}
        label = cx.STATUS_LABEL
        for c in conns:
            by_dir[c.info.direction] = by_dir.get(c.info.direction, 0) + 1
            key = f"{c.info.direction}/{c.info.route or '-'}"
            by_route[key] = by_route.get(key, 0) + 1
            state = label[c.state]
            states[state] = states.get(state, 0) + 1
        return {
            "pid": os.getpid(),
            "started": self.started,
            "config": str(rt.config.path),
            "generation": rt.generation,
            "mode": rt.config.mode,
            "stopping": self.stopping,
            "enrolling": self.enrolling,
            "listeners": [
                {"name": s.name, "direction": s.direction, "address": f"{s.host}:{s.port}"}
                for s in list(self.listeners)
            ],
            "connections": {
                "total": len(conns),
                "by_direction": by_dir,
                "by_route": by_route,
                "by_state": states,
                "max": rt.config.limits.max_connections,
            },
            "certificates": [
                {"role": ci.key, "path": ci.path, "subject": ci.subject,
                 "not_after": ci.not_after_iso}
                for ci in rt.certificates
            ],
        }  # fmt: skip


def _quiet(c: Conn) -> bool:
    """No byte in flight: nothing waits in a pipe or as unsent ciphertext."""
    if c.pipes is None:
        return False
    a, b = c.pipes
    return (
        a.start == a.end
        and b.start == b.end
        and not c.client.pending_out
        and not (c.server is not None and c.server.pending_out)
    )


def _close_notify_now(side: Side) -> None:
    """close_notify + FIN without blocking the loop: one send(); if the socket cannot take the
    alert at once, RST instead (a cut alert would read as a truncation anyway)."""
    try:
        relay.send_close_notify(side.tls)
        alert = side.out.read()
        if side.sock.send(alert) == len(alert):
            side.sock.close()
            return
    except (OSError, ssl.SSLError):
        pass
    abort(side.sock)


def _fmt(addr) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else "?"
