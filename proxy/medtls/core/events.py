"""Observer interface the daemon reports to (metrics, sd_notify, audit, status live elsewhere).

Subclass `Observer`, override what you need, and pass instances to `Daemon(config, observers=[...])`
or `Daemon.add_observer()`. Methods are called synchronously from the daemon's event loop, so they
must be quick and must not block; an exception raised by an observer is logged and ignored.

Lifecycle of one connection: `connection_opened` -> (`tls_established` | `handshake_failed`)
-> `connection_closed` (always, exactly once, also after a failure).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("medtls.core.events")

# handshake_failed / connection_closed reason categories
# We refuse the peer:
UNKNOWN_CA = "unknown_ca"  # peer certificate does not chain to the trusted CA
CERT_EXPIRED = "cert_expired"  # peer certificate expired or not yet valid
CERT_REVOKED = "cert_revoked"  # peer certificate listed in trust.crl
CERT_PURPOSE = "cert_purpose"  # peer certificate's extended key usage lacks its role
# The peer refuses our certificate (its alert says why):
PEER_UNKNOWN_CA = "peer_unknown_ca"  # the peer does not trust the CA of our certificate
PEER_CERT_EXPIRED = "peer_cert_expired"  # the peer says our certificate expired
PEER_CERT_REVOKED = "peer_cert_revoked"  # the peer says our certificate is revoked
CRL_UNUSABLE = "crl_unusable"  # trust.crl has no valid CRL of the peer's issuer (fail closed)
NO_CERTIFICATE = "no_certificate"  # client presented no certificate
ACL_DENIED = "acl_denied"  # inbound: verified identity not allowed on this port
IDENTITY_MISMATCH = "identity_mismatch"  # outbound: server cert fails the peer's verify: rules
PROTOCOL_VERSION = "protocol_version"  # no common TLS version
NO_SHARED_CIPHER = "no_shared_cipher"
NOT_TLS = "not_tls"  # plaintext (or garbage) sent to a TLS port
TIMEOUT = "timeout"  # handshake did not finish in limits.handshake_timeout
NO_ROUTE = "no_route"  # destination not in the peer/inbound table (default deny)
CONNECT_FAILED = "connect_failed"  # upstream refused/unreachable/connect_timeout
LIMIT = "max_connections"  # refused because limits.max_connections is reached
HANDSHAKE_LIMIT = "max_handshakes"  # inbound: limits.max_handshakes still in their handshake
SOURCE_LIMIT = "max_handshakes_per_source"  # inbound: that many from this address in handshake
PEER_REJECTED = "peer_rejected"  # the peer sent another fatal alert (bad_certificate, ...)
HANDSHAKE_ERROR = "handshake_error"  # anything else during setup
BAD_CERTIFICATE = "bad_certificate"  # verified, but not strict DER, or a CA's, as a peer identity
INTERNAL_ERROR = "internal_error"  # an unexpected exception; this connection was reset
CLOCK_UNSYNCED = "clock_unsynced"  # system clock not synchronised: certificates not validated
CALLING_AE_REFUSED = "calling_ae_refused"  # inbound dicom: calling AE not allowed for the cert
# Every reason above: the failure counters start at 0 with one series per reason and direction.
FAILURE_REASONS = (
    UNKNOWN_CA, CERT_EXPIRED, CERT_REVOKED, CERT_PURPOSE, PEER_UNKNOWN_CA, PEER_CERT_EXPIRED,
    PEER_CERT_REVOKED, CRL_UNUSABLE, NO_CERTIFICATE, ACL_DENIED, IDENTITY_MISMATCH,
    PROTOCOL_VERSION, NO_SHARED_CIPHER, NOT_TLS, TIMEOUT, NO_ROUTE, CONNECT_FAILED, LIMIT,
    HANDSHAKE_LIMIT, SOURCE_LIMIT, PEER_REJECTED, HANDSHAKE_ERROR, BAD_CERTIFICATE,
    INTERNAL_ERROR, CLOCK_UNSYNCED, CALLING_AE_REFUSED,
)  # fmt: skip
DIRECTIONS = ("outbound", "inbound")

# connection_closed results
RESULT_OK = "ok"  # both directions closed cleanly (FIN/close_notify), all bytes delivered
RESULT_RESET = "reset"  # a side reset or failed mid-stream
RESULT_IDLE = "idle_timeout"
RESULT_SHUTDOWN = "shutdown"  # cut (both sides reset) by the drain timeout at daemon stop
RESULT_TRUNCATED = "truncated"  # the TLS peer's stream ended without close_notify: plain side reset
RESULTS = (RESULT_OK, RESULT_RESET, RESULT_IDLE, RESULT_SHUTDOWN, RESULT_TRUNCATED)


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """Identity of one relayed connection (client = initiator of the TCP connection)."""

    id: int
    direction: str  # "outbound" (device -> LAN) | "inbound" (LAN -> device)
    route: str  # outbound peer name / inbound port name; "" when no route matched
    client: tuple[str, int]  # initiator address
    destination: tuple[str, int]  # original destination the client dialled
    started: float  # time.time()
    plaintext: bool = False  # explicit plaintext pass-through


class Observer:
    """No-op base class; every method may be overridden."""

    def listener_ready(self, name: str, direction: str, address: tuple[str, int]) -> None:
        """A listening socket is open (`name`: "outbound", "inbound" or an explicit entry)."""

    def connection_opened(self, conn: ConnInfo) -> None:
        """A client connection was accepted."""

    def tls_established(self, conn: ConnInfo, version: str, cipher: str, peer: str) -> None:
        """TLS is up on the LAN leg; `peer` is the verified certificate identity (subject)."""

    def handshake_failed(self, conn: ConnInfo, reason: str, detail: str) -> None:
        """Setup failed before any byte was relayed; `reason` is one of the categories above."""

    def connection_closed(
        self,
        conn: ConnInfo,
        bytes_from_client: int,
        bytes_from_server: int,
        duration: float,
        result: str,
    ) -> None:
        """The connection is gone; `result` is RESULT_* or a handshake_failed reason."""

    def first_message(self, conn: ConnInfo, names: dict[str, str]) -> None:
        """A `protocol: dicom | hl7` connection's first message was read: its names
        (`medtls.core.trail`: calling_ae/called_ae or hl7_from/hl7_to/hl7_type; sanitised,
        bounded; {} when the first bytes were no message of the protocol)."""

    def reload_ok(self, generation: int) -> None:
        """A reload succeeded; new connections use configuration `generation` (1 = initial)."""

    def reload_failed(self, error: str) -> None:
        """A reload was rejected; the running configuration stays."""

    def reloading(self) -> None:
        """A reload starts (SIGHUP or reload()); reload_ok or reload_failed follows."""

    def stopping(self) -> None:
        """SIGTERM/stop(): listeners closed, draining established connections."""


class Dispatcher(Observer):
    """Fans every event out to a list of observers, isolating their failures."""

    def __init__(self, observers: list[Observer] | None = None):
        self.observers: list[Observer] = list(observers or [])
        for name in _EVENTS:
            setattr(self, name, self._fan_out(name))

    def _fan_out(self, name: str):
        observers = self.observers

        def fan_out(*args, **kwargs):
            for obs in observers:
                try:
                    getattr(obs, name)(*args, **kwargs)
                except Exception:
                    log.exception("observer %r failed in %s", obs, name)

        return fan_out


_EVENTS = [n for n, v in vars(Observer).items() if callable(v) and not n.startswith("_")]
