"""The medtls daemon: listeners, connection setup, relay loop, reload and drain.

One epoll loop per process drives every socket (and every TLS object) of every connection.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import ipaddress
import itertools
import logging
import os
import select
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from medtls.config import Config, ConfigError, InboundPort, OutboundPeer, load_config
from medtls.core import events as ev
from medtls.core.certparse import CertParseError
from medtls.core.connlog import connection_line
from medtls.core.policy import (
    CertIdentity,
    acl_allows,
    peer_identity,
    route_inbound,
    route_outbound,
    unmap_v4,
    verify_mismatches,
)
from medtls.core.tlshello import offers_psk
from medtls.engine import fdlimit, relay, sessions
from medtls.engine.netutil import (
    abort,
    listen_socket,
    original_dst_nat,
    set_options,
    upstream_socket,
)
from medtls.engine.relay import READ, WRITE, BufferPool, Pipe, RelayError, Side, Truncated
from medtls.tls.context import TLSSetupError, issue_no_ticket, rotate_ticket_keys, self_test
from medtls.tls.material import Runtime, validate

log = logging.getLogger("medtls")
conn_log = logging.getLogger("medtls.conn")

CONNECTING, HANDSHAKE, RELAY, CLOSED = "connecting", "handshake", "relay", "closed"
_GONE = object()
_ERRHUP = select.EPOLLERR | select.EPOLLHUP
# Give freed memory back to the kernel at most this often (seconds), and only after churn.
TRIM_INTERVAL = 5.0
TRIM_AFTER_CLOSED = 64
# A connection quiet this long after traffic gets fresh TLS BIOs (a BIO never shrinks).
BIO_RENEW_IDLE = 5.0
# Inbound listeners only take TLS, whose client speaks first: the kernel holds a connection until
# its ClientHello arrives, so the first read after accept() finds it (no extra loop turn), and a
# peer that connects and stays silent holds no connection slot for the first ~7 s (SYN-ACK
# retransmissions at 1, 3 and 7 s); after that it is accepted and meets limits.handshake_timeout.
# Outbound (device) listeners cannot: a protocol whose server speaks first would never start.
DEFER_ACCEPT = 5
# accept() out of descriptors or memory: the listener leaves the epoll set for a back-off (doubling
# from the first to the last step) instead of spinning on a socket that stays readable; the error
# is logged once, then as a count every ACCEPT_LOG_WINDOW seconds while it lasts.
ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF = (0.05, 1.0)
ACCEPT_LOG_WINDOW = 10.0
# A handshake this old (seconds) is stalled: a LAN peer finishes in a few round trips, a flood
# that sends a byte and waits never does (limits.max_handshakes_per_source counts these).
STALLED_HANDSHAKE = 1.0
_NOT_PENDING = ("", 0.0)


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


@dataclass(frozen=True)
class ListenerSpec:
    """What a listening socket serves; `entry` is an explicit-mode entry name or ""."""

    direction: str  # outbound | inbound
    host: str
    port: int
    entry: str = ""
    transparent: bool = False

    @property
    def name(self) -> str:
        return self.entry or self.direction


def listener_specs(config: Config) -> list[ListenerSpec]:
    if config.mode == "explicit":
        specs = [
            ListenerSpec("outbound", p.listen.host, p.listen.port, p.name)
            for p in config.outbound
            if p.listen
        ]
        specs += [
            ListenerSpec("inbound", p.listen.host, p.listen.port, p.name)
            for p in config.inbound
            if p.listen
        ]
        return specs
    transparent = config.interception == "tproxy"
    lis = config.listeners
    out = [ListenerSpec("outbound", lis.address, lis.outbound, "", transparent)]
    if config.inbound:
        out.append(ListenerSpec("inbound", lis.address, lis.inbound, "", transparent))
    return out


def classify_tls_error(e: Exception) -> tuple[str, str]:
    """Map an ssl error to (reason category, human detail)."""
    if isinstance(e, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return ev.HANDSHAKE_ERROR, "connection closed during TLS handshake"
    reason = (getattr(e, "reason", None) or "").upper()
    if reason == "CERTIFICATE_VERIFY_FAILED":
        code = getattr(e, "verify_code", 0)
        msg = getattr(e, "verify_message", "") or "certificate verify failed"
        if code in (9, 10):
            return ev.CERT_EXPIRED, f"peer certificate {msg}"
        if code == _X509_CERT_REVOKED:
            return ev.CERT_REVOKED, "peer certificate revoked (trust.crl)"
        if code == _X509_INVALID_PURPOSE:
            return ev.CERT_PURPOSE, f"peer certificate {msg} (extended key usage lacks its role)"
        if code in _X509_CRL_PROBLEMS:
            return ev.CRL_UNUSABLE, f"trust.crl: {msg} for the peer's issuer"
        return ev.UNKNOWN_CA, f"peer certificate not trusted: {msg}"
    table = {
        "PEER_DID_NOT_RETURN_A_CERTIFICATE": (ev.NO_CERTIFICATE, "client sent no certificate"),
        "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
            ev.NO_CERTIFICATE, "peer requires a client certificate"),
        "UNSUPPORTED_PROTOCOL": (ev.PROTOCOL_VERSION, "peer offers no allowed TLS version"),
        "TLSV1_ALERT_PROTOCOL_VERSION": (ev.PROTOCOL_VERSION, "peer refused our TLS version"),
        "WRONG_SSL_VERSION": (ev.PROTOCOL_VERSION, "wrong TLS version"),
        "NO_PROTOCOLS_AVAILABLE": (ev.PROTOCOL_VERSION, "no TLS version available"),
        "NO_SHARED_CIPHER": (ev.NO_SHARED_CIPHER, "no cipher suite in common"),
        "SSLV3_ALERT_HANDSHAKE_FAILURE": (ev.PEER_REJECTED, "peer aborted the handshake"),
        "TLSV1_ALERT_UNKNOWN_CA": (ev.PEER_UNKNOWN_CA, "peer does not trust our certificate"),
        "SSLV3_ALERT_CERTIFICATE_EXPIRED": (
            ev.PEER_CERT_EXPIRED, "peer says our certificate expired"),
        "SSLV3_ALERT_CERTIFICATE_REVOKED": (
            ev.PEER_CERT_REVOKED, "peer: our certificate is revoked"),
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": (
            ev.PEER_REJECTED, "peer rejected our certificate for this use (extended key usage?)"),
        "SSLV3_ALERT_BAD_CERTIFICATE": (ev.PEER_REJECTED, "peer rejected our certificate"),
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN": (ev.PEER_REJECTED, "peer rejected our certificate"),
        "TLSV1_ALERT_ACCESS_DENIED": (ev.PEER_REJECTED, "peer denied access"),
        "TLSV1_ALERT_DECRYPT_ERROR": (ev.PEER_REJECTED, "peer failed to verify us"),
    }  # fmt: skip
    if reason in table:
        return table[reason]
    if reason in _NOT_TLS:
        return ev.NOT_TLS, "peer did not speak TLS (plaintext sent to a TLS port?)"
    return ev.HANDSHAKE_ERROR, (reason.lower().replace("_", " ") or str(e))


# X509_V_ERR_*: CERT_REVOKED; UNABLE_TO_GET_CRL, UNABLE_TO_DECRYPT_CRL_SIGNATURE,
# CRL_SIGNATURE_FAILURE, CRL_NOT_YET_VALID, CRL_HAS_EXPIRED, ERROR_IN_CRL_LAST/NEXT_UPDATE_FIELD,
# UNABLE_TO_GET_CRL_ISSUER, KEYUSAGE_NO_CRL_SIGN, UNHANDLED_CRITICAL_CRL_EXTENSION,
# DIFFERENT_CRL_SCOPE, CRL_PATH_VALIDATION_ERROR (openssl/x509_vfy.h).
_X509_CERT_REVOKED = 23
_X509_INVALID_PURPOSE = 26
_X509_CRL_PROBLEMS = frozenset({3, 5, 8, 11, 12, 15, 16, 33, 35, 36, 44, 54})

_NOT_TLS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LENGTH_MISMATCH",
    }
)


class Conn:
    """State of one relayed connection."""

    __slots__ = (
        "bios_renewed", "cipher", "client", "deadline", "detail", "failed", "first_tls_read",
        "hello_seen", "info", "last_activity", "peer", "pipes", "resumed", "route", "rt",
        "server", "size", "state", "steady", "t0", "tls_side", "upstream", "version",
    )  # fmt: skip

    def __init__(self, info: ev.ConnInfo, rt: Runtime, client: socket.socket, size: int):
        self.info = info
        self.rt = rt
        self.state = CONNECTING
        self.client = Side(self, "client", client)
        self.server: Side | None = None
        self.tls_side: Side | None = None
        self.pipes: tuple[Pipe, Pipe] | None = None
        self.size = size
        self.route: OutboundPeer | InboundPort | None = None
        self.upstream: tuple[str, int] | None = None
        self.deadline = 0.0
        self.last_activity = time.monotonic()
        self.t0 = time.monotonic()
        self.version = ""
        self.cipher = ""
        self.peer = ""
        self.failed = ""  # reason category once failed
        self.detail = ""  # why it failed or was closed early (for the connection line)
        self.first_tls_read = True
        self.steady = False  # relaying, past the first TLS read and the handshake BIOs
        self.resumed = False  # the TLS session was resumed from a ticket
        self.hello_seen = False  # server side: the ClientHello was looked at (ticket offered?)
        self.bios_renewed = 0.0  # time.monotonic() of the last BIO renewal


class Daemon:
    """Run with `serve_forever()`; `reload()`, `stop()` and `snapshot()` may be called anytime."""

    def __init__(self, config: Config | str | os.PathLike, observers=None):
        if not isinstance(config, Config):
            config = load_config(config)
        self_test()
        self.events = ev.Dispatcher(observers)
        self.rt = validate(config, 1)  # the same validation as `medtls check` and reload
        self.ep = select.epoll()
        self.fdmap: dict[int, object] = {}  # fd -> Side | ListenerSpec | None (wakeup)
        self.listeners: dict[ListenerSpec, socket.socket] = {}
        self.conns: dict[int, Conn] = {}
        self.ids = itertools.count(1)
        self.scratch = memoryview(bytearray(262144))
        self.pools: dict[int, BufferPool] = {}  # buffer_size -> pool (a reload may change it)
        self.started = time.time()
        self.stopping = False
        self.drain_deadline = 0.0
        self.peers: dict[str, dict] = {}
        self._next_timer = 0.0
        self._calls: list = []
        self._lock = threading.Lock()
        self._loop_thread: int | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poll_add(self._wake_r.fileno(), READ, None)
        # Inbound connections not yet authenticated (limits.max_handshakes): conn id -> (source,
        # accepted at), and their number per source (limits.max_handshakes_per_source).
        self._pending: dict[int, tuple[str, float]] = {}
        self._pending_by_source: dict[str, int] = {}
        self._caps = fdlimit.raise_and_fit(config.limits)
        self._caps_for = config.limits
        if self._caps.warning:
            log.warning("%s", self._caps.warning)
        self._paused: dict[ListenerSpec, tuple[socket.socket, float]] = {}  # -> (socket, until)
        self._accept_delay: dict[ListenerSpec, float] = {}  # the last back-off step
        self._accept_failures: dict[tuple[str, str], list] = {}  # -> [window start, count]
        self._malloc_trim = _malloc_trim()
        self._closed_since_trim = 0
        self._next_trim = 0.0
        self._next_ticket_keys = time.monotonic() + config.session_lifetime
        # set by medtls.ops: callable -> reason string while certificates must not be validated
        self.validation_gate = None

    @property
    def config(self) -> Config:
        return self.rt.config

    def add_observer(self, observer: ev.Observer) -> None:
        self.events.observers.append(observer)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the listeners (raises OSError with a clear message on failure)."""
        self._sync_listeners(self.rt.config)
        for w in self.rt.config.warnings():
            log.warning("%s", w)
        self.events.reload_ok(self.rt.generation)

    def _sync_listeners(self, config: Config) -> None:
        want = listener_specs(config)
        reuse = config.workers > 1
        opened = {}
        try:
            for spec in want:
                if spec not in self.listeners:
                    try:
                        opened[spec] = listen_socket(
                            spec.host,
                            spec.port,
                            spec.transparent,
                            reuseport=reuse,
                            keepalive=config.limits.keepalive,
                            defer_accept=DEFER_ACCEPT if spec.direction == "inbound" else 0,
                        )
                    except OSError as e:
                        raise OSError(
                            e.errno,
                            f"cannot listen on {spec.host}:{spec.port} ({spec.name}): {e.strerror}",
                        ) from None
        except OSError:
            for s in opened.values():
                s.close()
            raise
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
        if not self.listeners:
            self.start()
        self._loop_thread = threading.get_ident()
        if threading.current_thread() is threading.main_thread():
            self._install_signals()
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

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGHUP, lambda *_: self._call_soon(self._reload_in_loop))
        signal.signal(signal.SIGTERM, lambda *_: self._call_soon(self._stop_in_loop))
        signal.signal(signal.SIGINT, lambda *_: self._call_soon(self._stop_in_loop))

    def call_soon(self, fn, *args) -> None:
        """Run fn(*args) on the loop thread (thread-safe)."""
        self._call_soon(fn, *args)

    def _call_soon(self, fn, *args) -> None:
        with self._lock:
            self._calls.append((fn, args))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def stop(self) -> None:
        """Stop accepting and drain (limits.drain_timeout), from any thread."""
        if threading.get_ident() == self._loop_thread:
            self._stop_in_loop()
        else:
            self._call_soon(self._stop_in_loop)

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
        if self._loop_thread is None or threading.get_ident() == self._loop_thread:
            return self._reload_in_loop()
        done = threading.Event()
        result = []

        def run():
            result.append(self._reload_in_loop())
            done.set()

        self._call_soon(run)
        done.wait(30)
        return bool(result and result[0])

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
            c.detail = c.detail or "cut at stop (limits.drain_timeout)"
            self._finish(c, ev.RESULT_SHUTDOWN)
        for s in self.listeners.values():
            self._poll_del(s.fileno())
            s.close()
        self.listeners.clear()
        self._poll_del(self._wake_r.fileno())
        self._wake_r.close()
        self._wake_w.close()
        self.ep.close()
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)

    # ------------------------------------------------------------------ loop

    def _run_once(self) -> None:
        now = time.monotonic()
        timeout = max(0.0, min(0.5, self._next_timer - now)) if self.conns or self._paused else 1.0
        fdmap = self.fdmap
        for fd, event in self.ep.poll(timeout):
            data = fdmap.get(fd, _GONE)
            if data.__class__ is Side:
                c = data.conn
                if c.state != CLOSED:
                    mask = event & (READ | WRITE)
                    if event & _ERRHUP:
                        mask = READ | WRITE
                    try:
                        self._on_io(c, data, mask)
                    except Exception:  # a bug or a peer we did not foresee: this one goes
                        self._internal_error(c, "i/o")
            elif data is None:
                self._drain_wakeups()
            elif data is not _GONE:
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

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, args in calls:
            try:
                fn(*args)
            except Exception:
                log.exception("internal error in %s", getattr(fn, "__name__", fn))

    def _timers(self, now: float) -> None:
        self._limit_timers(now)
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
                if c.state in (CONNECTING, HANDSHAKE) and now >= c.deadline:
                    if c.state == CONNECTING:
                        self._fail(c, ev.CONNECT_FAILED, f"connect to {_fmt(c.upstream)} timed out")
                    else:
                        self._fail(c, ev.TIMEOUT, "TLS handshake timed out")
                elif c.state == RELAY and idle and now - c.last_activity >= idle:
                    c.detail = f"idle for {idle:g}s"
                    self._finish(c, ev.RESULT_IDLE, graceful=True)
                elif (
                    c.state == RELAY
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
                    self._pause_listener(lsock, spec, e.strerror or str(e), progress=i > 0)
                return
            try:
                self._new_conn(sock, addr, spec)
            except Exception:
                self._setup_crashed(sock)
        if self._accept_delay:
            self._accept_delay.pop(spec, None)  # accepting again: the next back-off starts small

    def _pause_listener(
        self, lsock: socket.socket, spec: ListenerSpec, why: str, progress: bool
    ) -> None:
        """Out of descriptors (or memory): the pending connection stays in the kernel's queue
        and the listener stays readable; take it out of epoll until the back-off is over. After
        progress (this call accepted some), the next loop turn, which may close some, tries
        again; the back-off grows only while nothing can be accepted."""
        now = time.monotonic()
        first, last = ACCEPT_BACKOFF
        if progress:
            self._accept_delay.pop(spec, None)
        else:
            delay = min(last, self._accept_delay.get(spec, first / 2) * 2)
            self._accept_delay[spec] = delay
            self._poll_del(lsock.fileno())
            self._paused[spec] = (lsock, now + delay)
            self._next_timer = min(self._next_timer, now + delay)
        key = (spec.name, why)
        window = self._accept_failures.get(key)
        if window is None:
            self._accept_failures[key] = [now, 0]
            log.error("accept on %s failed: %s (pausing the listener, retrying)", spec.name, why)
        else:
            window[1] += 1

    def _limit_timers(self, now: float) -> None:
        for spec, (lsock, until) in list(self._paused.items()):
            if now >= until:
                del self._paused[spec]
                if self.listeners.get(spec) is lsock:  # not closed by a reload or stop meanwhile
                    self._poll_add(lsock.fileno(), READ, (spec, lsock))
        for key, window in list(self._accept_failures.items()):
            if now - window[0] >= ACCEPT_LOG_WINDOW:
                if window[1]:
                    log.error(
                        "accept on %s failed: %s (%d times in the last %g s)",
                        key[0], key[1], window[1], now - window[0],
                    )  # fmt: skip
                    self._accept_failures[key] = [now, 0]
                else:
                    del self._accept_failures[key]
        limits = self.config.limits
        if limits is not self._caps_for:  # a reload changed the configuration
            self._caps_for = limits
            self._caps = fdlimit.raise_and_fit(limits)
            if self._caps.warning:
                log.warning("%s", self._caps.warning)

    def _refusal(self, spec: ListenerSpec, source: str) -> tuple[str, str] | None:
        """Why a new connection from `source` cannot be served now, or None.

        max_connections counts every connection except inbound ones still unauthenticated,
        which count against max_handshakes instead: a flood of handshakes that never finish
        cannot take the places of authorized peers, and is refused itself. A source with
        max_handshakes_per_source handshakes stalled (older than STALLED_HANDSHAKE) gets no
        more; one still completing many at once (a peer box carries all its device's
        connections from one address) is not held back."""
        caps = self._caps
        pending = len(self._pending)
        if len(self.conns) - pending >= caps.connections:
            return ev.LIMIT, f"limits.max_connections ({self._cap_text(caps.connections)}) reached"
        if spec.direction == "inbound":
            if (
                self._pending_by_source.get(source, 0) >= caps.per_source
                and self._stalled(source) >= caps.per_source
            ):
                n = self._cap_text(caps.per_source)
                return ev.SOURCE_LIMIT, f"limits.max_handshakes_per_source ({n}) reached: {source}"
            if pending >= caps.handshakes:
                return ev.HANDSHAKE_LIMIT, (
                    f"limits.max_handshakes ({self._cap_text(caps.handshakes)}) reached"
                )
        return None

    def _cap_text(self, n: int) -> str:
        return f"{n}, lowered to fit RLIMIT_NOFILE" if self._caps.warning else str(n)

    def _stalled(self, source: str) -> int:
        # Only for a source with many pending: at most max_handshakes entries.
        since = time.monotonic() - STALLED_HANDSHAKE
        return sum(1 for src, t in self._pending.values() if src == source and t <= since)

    def _end_pending(self, conn_id: int) -> None:
        source, _ = self._pending.pop(conn_id, _NOT_PENDING)
        if source:
            left = self._pending_by_source[source] - 1
            if left:
                self._pending_by_source[source] = left
            else:
                del self._pending_by_source[source]

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
        source = _source_key(client[0])
        refusal = self._refusal(spec, source)
        self.conns[info.id] = c
        self.events.connection_opened(info)
        if refusal is not None:
            self._fail(c, *refusal)
            return
        if route is None:
            table = "outbound peer" if spec.direction == "outbound" else "inbound port"
            self._fail(c, ev.NO_ROUTE, f"destination not in the {table} table (default deny)")
            return
        gate = self.validation_gate
        why = gate() if gate is not None and not plaintext else None
        if why:
            self._fail(c, ev.CLOCK_UNSYNCED, why)
            return
        if spec.direction == "outbound":
            c.upstream = (route.address, route.tls_port)
            spoof = (
                client[0] if (cfg.mode == "transparent" and cfg.interception == "tproxy") else None
            )
            self._connect(c, spoof)
        else:
            c.tls_side = c.client
            c.client.start_tls(rt.inbound_ctx[route.name], server=True)
            self._pending[info.id] = (source, c.t0)
            self._pending_by_source[source] = self._pending_by_source.get(source, 0) + 1
            self._enter_handshake(c, wait_for_hello=True)

    # ------------------------------------------------------------------ setup

    def _connect(self, c: Conn, spoof: str | None) -> None:
        cfg = c.rt.config
        try:
            sock = upstream_socket(c.upstream[0], cfg.limits.keepalive, spoof)
        except OSError as e:
            self._fail(c, ev.CONNECT_FAILED, f"cannot create upstream socket: {e.strerror}")
            return
        c.server = Side(c, "server", sock)
        c.state = CONNECTING
        c.deadline = time.monotonic() + cfg.limits.connect_timeout
        err = sock.connect_ex(c.upstream)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            self._fail(c, ev.CONNECT_FAILED, f"connect to {_fmt(c.upstream)}: {os.strerror(err)}")
            return
        self._set_mask(c.server, WRITE)
        self._set_mask(c.client, 0)

    def _connected(self, c: Conn) -> None:
        err = c.server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(c, ev.CONNECT_FAILED, f"connect to {_fmt(c.upstream)}: {os.strerror(err)}")
            return
        route = c.route
        if isinstance(route, OutboundPeer) and not route.plaintext:
            c.tls_side = c.server
            c.server.start_tls(
                c.rt.outbound_ctx[route.name],
                server=False,
                sni=route.sni,
                session=sessions.offer(c.rt, route.name, time.monotonic()),
            )
            self._enter_handshake(c)
        else:
            self._start_relay(c)

    def _enter_handshake(self, c: Conn, wait_for_hello: bool = False) -> None:
        c.state = HANDSHAKE
        c.deadline = time.monotonic() + c.rt.config.limits.handshake_timeout
        if c.tls_side is not c.client:
            self._set_mask(c.client, 0)
        try:
            if wait_for_hello:
                # A TLS server speaks only after the ClientHello, which has usually arrived by
                # the time the connection is accepted: read it now; if not, wait for it without
                # a do_handshake() that could only ask for more input.
                t = c.tls_side
                t.recv_tls(self.scratch)
                if not t.inc.pending and not t.raw_eof:
                    self._set_mask(t, READ)
                    return
            self._handshake_step(c)
        except RelayError as e:
            self._handshake_reset(c, e)

    def _handshake_reset(self, c: Conn, e: RelayError) -> None:
        """A reset (or a send failure) before the handshake completed is a failed handshake:
        observers, and with them the audit trail's node-authentication failure, hear of it."""
        self._fail(c, ev.HANDSHAKE_ERROR, f"{e} during the TLS handshake")

    def _handshake_step(self, c: Conn) -> None:
        t = c.tls_side
        if not c.hello_seen and t is c.client:
            # The first step of a server handshake follows the first read: the BIO holds
            # exactly what that read put in the scratch buffer, the ClientHello.
            c.hello_seen = True
            n = t.inc.pending
            if c.rt.config.session_lifetime and offers_psk(bytes(self.scratch[:n])):
                with contextlib.suppress(TLSSetupError):  # self_test() proved the hooks
                    issue_no_ticket(t.tls)
        try:
            t.tls.do_handshake()
        except ssl.SSLWantReadError:
            t.flush()
            self._set_mask(t, (0 if t.raw_eof else READ) | (WRITE if t.wblocked else 0))
            if t.raw_eof:
                self._fail(c, ev.HANDSHAKE_ERROR, "connection closed during TLS handshake")
            return
        except ssl.SSLError as e:
            reason, detail = classify_tls_error(e)
            with contextlib.suppress(RelayError):
                t.flush()  # deliver our alert
            self._fail(c, reason, detail)
            return
        if t is c.client:
            t.flush()  # a server's last flight (none in TLS 1.3 without tickets)
        # A client's last flight (Certificate/Finished) is sent by the first relay step, in one
        # segment with the first application data that is already waiting.
        self._handshake_done(c)

    def _handshake_done(self, c: Conn) -> None:
        t = c.tls_side
        c.version = t.tls.version() or ""
        c.cipher = (t.tls.cipher() or ("",))[0]
        der = t.tls.getpeercert(binary_form=True)
        if der is None:
            self._fail_after_handshake(c, ev.NO_CERTIFICATE, "peer sent no certificate")
            return
        try:
            ident: CertIdentity = peer_identity(der)
        except CertParseError as e:
            self._fail_after_handshake(c, ev.BAD_CERTIFICATE, f"peer certificate refused: {e}")
            return
        c.peer = ident.describe()
        if t.tls.session_reused:
            c.resumed = True
            expired = sessions.expired_peer(t.tls, time.time())
            if expired:
                self._fail_after_handshake(c, ev.CERT_EXPIRED, expired)
                return
        route = c.route
        if isinstance(route, OutboundPeer):
            bad = verify_mismatches(route.verify, ident)
            if bad:
                self._fail_after_handshake(
                    c, ev.IDENTITY_MISMATCH, f"server {c.peer}: " + "; ".join(bad)
                )
                return
            self._tls_ok(c)
            self._start_relay(c)
        else:
            idx = acl_allows(route, ident, c.info.client[0])
            if idx is None:
                self._fail_after_handshake(
                    c, ev.ACL_DENIED, f"client {c.peer} not allowed on {route.name}"
                )
                return
            self._tls_ok(c)
            cfg = c.rt.config
            if cfg.mode == "explicit":
                c.upstream = (cfg.device.ip, route.device_port)
                spoof = None
            else:
                c.upstream = (c.info.destination[0], route.device_port)
                spoof = c.info.client[0] if cfg.interception == "tproxy" else None
            self._connect(c, spoof)

    def _internal_error(self, c: Conn, where: str) -> None:
        """An unexpected exception while handling `c`: reset this connection, keep the loop."""
        log.exception("internal error in connection %d (%s): resetting it", c.info.id, where)
        if c.state == CLOSED:
            return
        try:
            if c.state == RELAY:
                c.detail = "internal error (see the log)"
                self._finish(c, ev.INTERNAL_ERROR)
            else:
                self._fail(c, ev.INTERNAL_ERROR, "internal error (see the log)")
        except Exception:  # closing failed too: drop it the hard way, quietly
            c.state = CLOSED
            self.conns.pop(c.info.id, None)
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

    def _fail_after_handshake(self, c: Conn, reason: str, detail: str) -> None:
        with contextlib.suppress(RelayError):
            c.tls_side.flush()  # a client's last flight, sent as before a policy failure
        self._fail(c, reason, detail)

    def _tls_ok(self, c: Conn) -> None:
        self._end_pending(c.info.id)  # authenticated: out of the handshake budget
        self.events.tls_established(c.info, c.version, c.cipher, c.peer)

    def _start_relay(self, c: Conn) -> None:
        c.state = RELAY
        pool = self.pools.get(c.size)
        if pool is None:
            pool = self.pools[c.size] = BufferPool(c.size)
        c.pipes = (Pipe(c.client, c.server, pool), Pipe(c.server, c.client, pool))
        c.last_activity = time.monotonic()
        if c.client.tls is None and c.tls_side is not None:
            # Outbound: the device usually sent its first bytes while we shook hands; read them
            # now, so they leave with our Finished instead of one event loop turn later.
            try:
                relay.recv_plain(c.client, c.pipes[0])
            except RelayError as e:
                self._relay_failed(c, e)
                return
        self._relay(c)

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
            if c.state == RELAY:
                if mask & READ:
                    if side.tls is not None:
                        side.recv_tls(self.scratch)
                    else:
                        relay.recv_plain(side, c.pipes[0] if side is c.client else c.pipes[1])
                self._relay(c)
            elif c.state == HANDSHAKE:
                try:
                    if mask & READ:
                        side.recv_tls(self.scratch)
                    self._handshake_step(c)
                except RelayError as e:
                    self._handshake_reset(c, e)
            elif c.state == CONNECTING and side is c.server:
                self._connected(c)
        except RelayError as e:
            self._relay_failed(c, e)

    def _relay(self, c: Conn) -> None:
        pipes = c.pipes
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
        if c.first_tls_read and c.tls_side is not None:
            p = pipes[1 if c.tls_side is c.server else 0]
            if p.count or p.end:
                c.first_tls_read = False
                if t is c.server:  # outbound: a TLS 1.3 ticket arrives with the first data
                    sessions.keep(c.rt, c.route.name, t.tls, c.last_activity, c.resumed)
        elif not c.steady and (t is None or not t.handshake_bios):
            c.steady = not c.first_tls_read
        a, b = pipes
        if a.src.eof_in and b.src.eof_in and relay.finished(pipes):
            self._finish(c, ev.RESULT_OK)
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
        if (e.tls_error is not None and c.state == RELAY and c.first_tls_read
                and c.tls_side is c.server and c.version == "TLSv1.3"):  # fmt: skip
            # TLS 1.3: a server rejects our certificate only after our handshake completed.
            # (Not so in TLS 1.2, nor for our server side: an alert there is no rejection,
            # e.g. a client aborting after we refused its renegotiation.)
            reason, detail = classify_tls_error(e.tls_error)
            if reason != ev.HANDSHAKE_ERROR:
                self._fail(c, reason, detail)
                return
        c.detail = str(e)
        self._finish(c, ev.RESULT_TRUNCATED if isinstance(e, Truncated) else ev.RESULT_RESET)

    def _set_mask(self, side: Side | None, mask: int) -> None:
        if side is None or side.mask == mask:
            return
        if mask == 0:
            self._poll_del(side.fd)
        elif side.mask == 0:
            self._poll_add(side.fd, mask, side)
        else:
            self.ep.modify(side.fd, mask)
        side.mask = mask

    def _poll_add(self, fd: int, mask: int, data) -> None:
        self.ep.register(fd, mask)
        self.fdmap[fd] = data

    def _poll_del(self, fd: int) -> None:
        if self.fdmap.pop(fd, _GONE) is not _GONE:
            with contextlib.suppress(OSError, ValueError):
                self.ep.unregister(fd)

    # ------------------------------------------------------------------ end

    def _fail(self, c: Conn, reason: str, detail: str) -> None:
        c.failed = reason
        c.detail = detail
        self.events.handshake_failed(c.info, reason, detail)
        name = c.info.route
        if name:
            st = self.peers.setdefault(name, {})
            st["last_failure"] = time.time()
            st["last_failure_reason"] = reason
        self._finish(c, reason)

    def _finish(self, c: Conn, result: str, graceful: bool = False) -> None:
        """Close both sides: FIN (and close_notify) only for a complete stream, else RST.

        `graceful` (idle timeout) closes cleanly a relaying connection with no byte in flight.
        """
        if c.state == CLOSED:
            return
        fdmap = self.fdmap
        clean = result == ev.RESULT_OK or (graceful and c.state == RELAY and _quiet(c))
        for side in (c.client, c.server):
            if side is None:
                continue
            # close() takes the socket out of the epoll set: no epoll_ctl(DEL) needed.
            fdmap.pop(side.fd, None)
            side.mask = 0
            if not clean:
                abort(side.sock)
            elif graceful and side.tls is not None and not side.shut_out:
                _close_notify_now(side)
            else:
                side.sock.close()
        c.state = CLOSED
        for side in (c.client, c.server):
            if side is not None:
                side.conn = None  # no Conn <-> Side cycle: freed by refcount, not by the GC
        self._closed_since_trim += 1
        self.conns.pop(c.info.id, None)
        if self._pending:
            self._end_pending(c.info.id)
        if c.pipes:
            for p in c.pipes:
                p.release()
        up = c.pipes[0].count if c.pipes else 0
        down = c.pipes[1].count if c.pipes else 0
        dur = time.monotonic() - c.t0
        if not c.failed:
            name = c.info.route
            if name and c.pipes:
                self.peers.setdefault(name, {})["last_success"] = time.time()
                t = c.tls_side
                if result == ev.RESULT_OK and c.first_tls_read and t is not None and t is c.server:
                    # No data ever came back: a ticket, if any, was read with the close.
                    sessions.keep(c.rt, name, t.tls, time.monotonic(), c.resumed)
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
            c.resumed,
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
        for c in conns:
            by_dir[c.info.direction] = by_dir.get(c.info.direction, 0) + 1
            key = f"{c.info.direction}/{c.info.route or '-'}"
            by_route[key] = by_route.get(key, 0) + 1
            states[c.state] = states.get(c.state, 0) + 1
        return {
            "pid": os.getpid(),
            "started": self.started,
            "config": str(rt.config.path),
            "generation": rt.generation,
            "mode": rt.config.mode,
            "stopping": self.stopping,
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
            "peers": self._peer_states(rt),
        }  # fmt: skip

    def _peer_states(self, rt: Runtime) -> dict:
        peers = {}
        for p in rt.config.outbound:
            peers[p.name] = {"direction": "outbound", "address": f"{p.address}:{p.port}"}
        for p in rt.config.inbound:
            peers[p.name] = {"direction": "inbound", "port": p.port}
        for name, d in peers.items():
            d.update(self.peers.get(name, {}))
        return peers


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


def _source_key(ip: str) -> str:
    """The address a per-source limit counts: IPv4 as is, IPv6 by its /64 (one host can use
    every address of its subnet)."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    except ValueError:
        return ip


def _fmt(addr) -> str:
    return f"{addr[0]}:{addr[1]}" if addr else "?"
