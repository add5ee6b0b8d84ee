"""One relayed connection as a state machine: states, events, and the transition table.

Pure, in the spirit of h11's `_state.py`: `step(state, event)` says which state comes next and
which actions the caller (the daemon) performs, in order; it does no I/O and knows no socket. The
daemon feeds an event at every change of a connection's life (accept, routing, connect,
handshake, identity, first data, end), never per read: the relay hot path does not pass here.
An action that may feed a further event (CONNECT, START_*, CONTINUE_HANDSHAKE, CHECK_IDENTITY)
comes last in its transition.

Lifecycle (an outbound TLS connection, an inbound one, a plaintext pass-through):

    ACCEPTED -route_outbound-> CONNECTING_TLS -connected-> HANDSHAKE -handshake_done-> VERIFYING
        -peer_verified-> RELAY_OPENING -first_data-> RELAY -eof-> CLOSED
    ACCEPTED -route_inbound-> AWAIT_HELLO -hello-> HANDSHAKE -handshake_done-> VERIFYING
        -client_authorized-> CONNECTING -connected-> RELAY_OPENING -first_data-> RELAY ...
    ACCEPTED -route_plaintext-> CONNECTING -connected-> RELAY_OPENING ...

On an outbound route with `protocol: dicom | hl7` (PROTOCOL_TABLES), a peer leg that cannot be
established or authenticated leads to REFUSING instead of CLOSED: the device's first message is
read and answered in its protocol (A-ASSOCIATE-RJ, ACK AE/AR), then REFUSING -answered-> CLOSED
(HL7) or, DICOM, REFUSING -answered-> AWAIT_CLOSE -eof|timeout-> CLOSED (PS3.8's Sta13: the
requester closes after reading the RJ; ARTIM bounds the wait).
On DICOM, a peer leg lost while relaying sends the device an A-ABORT.

Every open state also takes `drain_deadline` (cut at stop) and `internal_error` (a bug while
handling this connection). An event a state does not take raises `ProtocolError`, which the
daemon's loop guard turns into `internal_error` for that connection only.
"""

from __future__ import annotations

from medtls.core import events as ev

# ---------------------------------------------------------------- states
ACCEPTED = "accepted"  # accepted, not yet routed nor checked against the limits
CONNECTING_TLS = "connecting_tls"  # outbound: dialling the LAN peer; our TLS client follows
CONNECTING = "connecting"  # dialling the far side; the relay follows (device, or plaintext peer)
AWAIT_HELLO = "await_hello"  # inbound: our TLS server waits for the ClientHello
HANDSHAKE = "handshake"  # TLS handshake in progress
VERIFYING = "verifying"  # handshake complete; the peer's identity is being checked
# Relaying, before the TLS peer's first application data: a TLS 1.3 server may still reject our
# certificate, and a session ticket may still arrive. A plaintext pass-through has no TLS peer
# and stays here until it ends.
RELAY_OPENING = "relay_opening"
RELAY = "relay"  # relaying, the TLS peer's stream confirmed
# A `protocol: dicom | hl7` route whose peer leg failed: reading the device's first message
# (bounded in size and time) to answer it in its own protocol (A-ASSOCIATE-RJ, ACK AE/AR).
REFUSING = "refusing"
# Inbound `protocol: dicom` port whose allow entry binds calling AE titles: the client is
# authenticated, its A-ASSOCIATE-RQ is read (bounded in size and time) before the device is dialled.
READING_FIRST = "reading_first"
# DICOM, after the A-ASSOCIATE-RJ: the result is logged; waiting (ARTIM) for the requester to close,
# what it still sends is read and dropped (bounded).
AWAIT_CLOSE = "await_close"
CLOSED = "closed"

STATES = (
    ACCEPTED, CONNECTING_TLS, CONNECTING, AWAIT_HELLO, HANDSHAKE, VERIFYING, RELAY_OPENING,
    RELAY, REFUSING, READING_FIRST, AWAIT_CLOSE, CLOSED,
)  # fmt: skip
# Groups the daemon tests membership of (timers, I/O dispatch).
DIALLING = frozenset({CONNECTING_TLS, CONNECTING})
HANDSHAKING = frozenset({AWAIT_HELLO, HANDSHAKE})
RELAYING = frozenset({RELAY_OPENING, RELAY})
# limits.connect_timeout / limits.handshake_timeout (also the refused device's first message);
# ARTIM (core/refusal.py) for AWAIT_CLOSE
WITH_DEADLINE = DIALLING | HANDSHAKING | {REFUSING, READING_FIRST, AWAIT_CLOSE}
# The state names status shows (snapshot()["connections"]["by_state"]): the four it always had.
STATUS_LABEL = {
    ACCEPTED: "connecting", CONNECTING_TLS: "connecting", CONNECTING: "connecting",
    AWAIT_HELLO: "handshake", HANDSHAKE: "handshake", VERIFYING: "handshake",
    RELAY_OPENING: "relay", RELAY: "relay", REFUSING: "closed", READING_FIRST: "handshake",
    AWAIT_CLOSE: "closed", CLOSED: "closed",
}  # fmt: skip

# ---------------------------------------------------------------- events
ROUTE_OUTBOUND = "route_outbound"  # an outbound TLS peer matched
ROUTE_PLAINTEXT = "route_plaintext"  # an outbound plaintext pass-through matched
ROUTE_INBOUND = "route_inbound"  # an inbound port matched
NO_ROUTE = "no_route"  # nothing matched (default deny)
REFUSED = "refused"  # a limit is reached (reason: max_connections, max_handshakes...)
GATE_CLOSED = "gate_closed"  # certificates must not be validated now (clock not synchronised)
CONNECTED = "connected"
CONNECT_FAILED = "connect_failed"
HELLO = "hello"  # the ClientHello (or the end of the stream) was read
HANDSHAKE_DONE = "handshake_done"
HANDSHAKE_FAILED = "handshake_failed"  # reason: classified from the TLS error
IDENTITY_REFUSED = "identity_refused"  # reason: no/bad certificate, expired session, mismatch
ACL_DENIED = "acl_denied"  # inbound: the verified client is not allowed on this port
PEER_VERIFIED = "peer_verified"  # outbound: the server is who the peer's verify: rules say
CLIENT_AUTHORIZED = "client_authorized"  # inbound: the client passed the ACL
FIRST_DATA = "first_data"  # the TLS peer's first application data (or its end) arrived
REJECTED = "rejected"  # reason: a TLS 1.3 server rejected our certificate after its Finished
EOF = "eof"  # both directions ended cleanly, every byte delivered
TRUNCATED = "truncated"  # the TLS peer's stream ended without close_notify
RESET = "reset"  # a side reset or failed
TIMEOUT = "timeout"  # the state's deadline passed (connect or handshake)
IDLE = "idle"  # no traffic for limits.idle_timeout
DRAIN_DEADLINE = "drain_deadline"  # still open at the end of limits.drain_timeout
INTERNAL_ERROR = "internal_error"
ANSWERED = "answered"  # refusing: the device got its refusal in its protocol, every byte sent
# Inbound, calling AE titles bound to the certificate (READING_FIRST):
CLIENT_AUTHORIZED_AE = "client_authorized_ae"  # passed the ACL; its calling AE is checked next
FIRST_MESSAGE = "first_message"  # its A-ASSOCIATE-RQ is complete and its calling AE allowed
AE_REFUSED = "ae_refused"  # its calling AE title is not allowed for its certificate

EVENTS = (
    ROUTE_OUTBOUND, ROUTE_PLAINTEXT, ROUTE_INBOUND, NO_ROUTE, REFUSED, GATE_CLOSED, CONNECTED,
    CONNECT_FAILED, HELLO, HANDSHAKE_DONE, HANDSHAKE_FAILED, IDENTITY_REFUSED, ACL_DENIED,
    PEER_VERIFIED, CLIENT_AUTHORIZED, FIRST_DATA, REJECTED, EOF, TRUNCATED, RESET, TIMEOUT, IDLE,
    DRAIN_DEADLINE, INTERNAL_ERROR, ANSWERED, CLIENT_AUTHORIZED_AE, FIRST_MESSAGE, AE_REFUSED,
)  # fmt: skip

# ---------------------------------------------------------------- actions
CONNECT = "connect"  # open the far socket and connect (may feed connected/connect_failed)
START_TLS_CLIENT = "start_tls_client"  # outbound: TLS client on the server side, first step
START_TLS_SERVER = "start_tls_server"  # inbound: TLS server on the client side, read the hello
CONTINUE_HANDSHAKE = "continue_handshake"  # run the handshake as far as the input allows
CHECK_IDENTITY = "check_identity"  # the peer's certificate against verify: rules or the ACL
FLUSH_TLS = "flush_tls"  # send what TLS queued (our alert, a client's last flight), best effort
TLS_OK = "tls_ok"  # authenticated: leave the handshake budget, report tls_established
START_RELAY = "start_relay"
KEEP_SESSION = "keep_session"  # outbound: keep the TLS session (ticket) for resumption
FAIL = "fail"  # report handshake_failed(result, detail)
CLOSE_CLEAN = "close_clean"  # FIN (close_notify already sent by the relay)
CLOSE_IF_QUIET = "close_if_quiet"  # close_notify + FIN if no byte is in flight, else RST
RESET_BOTH = "reset_both"  # RST on both sockets
LOG_RESULT = "log_result"  # the connection line and connection_closed(result)
# Protocol-aware routes (`protocol: dicom | hl7`):
READ_FIRST = "read_first"  # drop the peer leg; read the device's first message and answer it
ABORT_DEVICE = "abort_device"  # A-ABORT + FIN to the device, RST to the peer (a closing action)
READ_PEER_FIRST = "read_peer_first"  # inbound: read the client's first message before dialling
START_ARTIM = "start_artim"  # DICOM: wait (bounded) for the requester to close after the RJ
CLOSE_GRACEFUL = "close_graceful"  # close_notify (if TLS and not yet sent) + FIN

# `result` of a transition that takes the reason the event carries.
FROM_EVENT = "<from the event>"


class Transition:
    """Where an event leads: the next state, the actions in order, and the result."""

    __slots__ = ("actions", "next", "result")

    def __init__(self, next_state: str, actions: tuple[str, ...], result: str = ""):
        self.next = next_state
        self.actions = actions
        self.result = result  # the failure reason or the close result; "" while it lives

    def __repr__(self) -> str:
        return f"Transition({self.next!r}, {self.actions!r}, {self.result!r})"


class ProtocolError(Exception):
    """An event the connection's state does not take: a bug in the caller."""


_FAIL = (FAIL, RESET_BOTH, LOG_RESULT)
_FAIL_AFTER_TLS = (FLUSH_TLS, FAIL, RESET_BOTH, LOG_RESULT)
_CUT = (RESET_BOTH, LOG_RESULT)
_OPEN = (ACCEPTED, CONNECTING_TLS, CONNECTING, AWAIT_HELLO, HANDSHAKE, VERIFYING, RELAY_OPENING,
         RELAY, READING_FIRST)  # fmt: skip

TABLE: dict[tuple[str, str], Transition] = {
    # routing and admission
    (ACCEPTED, ROUTE_OUTBOUND): Transition(CONNECTING_TLS, (CONNECT,)),
    (ACCEPTED, ROUTE_PLAINTEXT): Transition(CONNECTING, (CONNECT,)),
    (ACCEPTED, ROUTE_INBOUND): Transition(AWAIT_HELLO, (START_TLS_SERVER,)),
    (ACCEPTED, NO_ROUTE): Transition(CLOSED, _FAIL, ev.NO_ROUTE),
    (ACCEPTED, REFUSED): Transition(CLOSED, _FAIL, FROM_EVENT),
    (ACCEPTED, GATE_CLOSED): Transition(CLOSED, _FAIL, ev.CLOCK_UNSYNCED),
    # dialling
    (CONNECTING_TLS, CONNECTED): Transition(HANDSHAKE, (START_TLS_CLIENT,)),
    (CONNECTING_TLS, CONNECT_FAILED): Transition(CLOSED, _FAIL, ev.CONNECT_FAILED),
    (CONNECTING_TLS, TIMEOUT): Transition(CLOSED, _FAIL, ev.CONNECT_FAILED),
    (CONNECTING, CONNECTED): Transition(RELAY_OPENING, (START_RELAY,)),
    (CONNECTING, CONNECT_FAILED): Transition(CLOSED, _FAIL, ev.CONNECT_FAILED),
    (CONNECTING, TIMEOUT): Transition(CLOSED, _FAIL, ev.CONNECT_FAILED),
    # TLS handshake
    (AWAIT_HELLO, HELLO): Transition(HANDSHAKE, (CONTINUE_HANDSHAKE,)),
    (AWAIT_HELLO, RESET): Transition(CLOSED, _FAIL, ev.HANDSHAKE_ERROR),
    (AWAIT_HELLO, TIMEOUT): Transition(CLOSED, _FAIL, ev.TIMEOUT),
    (HANDSHAKE, HANDSHAKE_DONE): Transition(VERIFYING, (CHECK_IDENTITY,)),
    (HANDSHAKE, HANDSHAKE_FAILED): Transition(CLOSED, _FAIL_AFTER_TLS, FROM_EVENT),
    (HANDSHAKE, RESET): Transition(CLOSED, _FAIL, ev.HANDSHAKE_ERROR),
    (HANDSHAKE, TIMEOUT): Transition(CLOSED, _FAIL, ev.TIMEOUT),
    # identity and policy
    (VERIFYING, IDENTITY_REFUSED): Transition(CLOSED, _FAIL_AFTER_TLS, FROM_EVENT),
    (VERIFYING, ACL_DENIED): Transition(CLOSED, _FAIL_AFTER_TLS, ev.ACL_DENIED),
    (VERIFYING, PEER_VERIFIED): Transition(RELAY_OPENING, (TLS_OK, START_RELAY)),
    (VERIFYING, CLIENT_AUTHORIZED): Transition(CONNECTING, (TLS_OK, CONNECT)),
    (VERIFYING, CLIENT_AUTHORIZED_AE): Transition(READING_FIRST, (TLS_OK, READ_PEER_FIRST)),
    # the client's first message, before the device is dialled (calling AE bound)
    (READING_FIRST, FIRST_MESSAGE): Transition(CONNECTING, (CONNECT,)),
    (READING_FIRST, AE_REFUSED): Transition(REFUSING, (FAIL, READ_FIRST), ev.CALLING_AE_REFUSED),
    (READING_FIRST, RESET): Transition(CLOSED, _CUT, ev.RESULT_RESET),  # not an RQ, or closed
    (READING_FIRST, TIMEOUT): Transition(CLOSED, _CUT, ev.TIMEOUT),
    # relaying
    (RELAY_OPENING, FIRST_DATA): Transition(RELAY, (KEEP_SESSION,)),
    (RELAY_OPENING, REJECTED): Transition(CLOSED, _FAIL, FROM_EVENT),
    # No data ever came back: a ticket, if any, was read with the close.
    (RELAY_OPENING, EOF): Transition(CLOSED, (KEEP_SESSION, CLOSE_CLEAN, LOG_RESULT), ev.RESULT_OK),
    (RELAY, EOF): Transition(CLOSED, (CLOSE_CLEAN, LOG_RESULT), ev.RESULT_OK),
    **{
        (state, event): Transition(CLOSED, how, result)
        for state in (RELAY_OPENING, RELAY)
        for event, how, result in (
            (TRUNCATED, _CUT, ev.RESULT_TRUNCATED),
            (RESET, _CUT, ev.RESULT_RESET),
            (IDLE, (CLOSE_IF_QUIET, LOG_RESULT), ev.RESULT_IDLE),
            (INTERNAL_ERROR, _CUT, ev.INTERNAL_ERROR),
        )
    },
    # every setup state: a bug fails the setup (observers hear handshake_failed)
    **{
        (state, INTERNAL_ERROR): Transition(CLOSED, _FAIL, ev.INTERNAL_ERROR)
        for state in _OPEN
        if state not in RELAYING and state != READING_FIRST
    },
    # authenticated, before the device is dialled: like a relay, cut without a setup failure
    (READING_FIRST, INTERNAL_ERROR): Transition(CLOSED, _CUT, ev.INTERNAL_ERROR),
    # every open state: what the drain timeout finds still open is cut (no device takes a cut
    # transfer for a complete one)
    **{(state, DRAIN_DEADLINE): Transition(CLOSED, _CUT, ev.RESULT_SHUTDOWN) for state in _OPEN},
    # refusing in the device's protocol (reached through ANSWERING below); the result stays the
    # failure that led here, which the daemon passes as the reason
    (REFUSING, ANSWERED): Transition(CLOSED, (CLOSE_CLEAN, LOG_RESULT), FROM_EVENT),
    (REFUSING, RESET): Transition(CLOSED, _CUT, FROM_EVENT),  # garbage, too long, or closed
    (REFUSING, TIMEOUT): Transition(CLOSED, _CUT, FROM_EVENT),
    (REFUSING, INTERNAL_ERROR): Transition(CLOSED, _CUT, ev.INTERNAL_ERROR),
    (REFUSING, DRAIN_DEADLINE): Transition(CLOSED, _CUT, ev.RESULT_SHUTDOWN),
}  # fmt: skip

# An outbound route with `protocol: dicom | hl7` ("answering") takes these instead of TABLE's:
# a peer leg that cannot be established or authenticated is reported as before (FAIL), then the
# device is answered in its protocol; a leg lost after the association is up aborts it.
_REFUSE = (FAIL, READ_FIRST)
_REFUSE_AFTER_TLS = (FLUSH_TLS, FAIL, READ_FIRST)
ANSWERING: dict[tuple[str, str], Transition] = {
    (ACCEPTED, GATE_CLOSED): Transition(REFUSING, _REFUSE, ev.CLOCK_UNSYNCED),
    (CONNECTING_TLS, CONNECT_FAILED): Transition(REFUSING, _REFUSE, ev.CONNECT_FAILED),
    (CONNECTING_TLS, TIMEOUT): Transition(REFUSING, _REFUSE, ev.CONNECT_FAILED),
    (HANDSHAKE, HANDSHAKE_FAILED): Transition(REFUSING, _REFUSE_AFTER_TLS, FROM_EVENT),
    (HANDSHAKE, RESET): Transition(REFUSING, _REFUSE, ev.HANDSHAKE_ERROR),
    (HANDSHAKE, TIMEOUT): Transition(REFUSING, _REFUSE, ev.TIMEOUT),
    (VERIFYING, IDENTITY_REFUSED): Transition(REFUSING, _REFUSE_AFTER_TLS, FROM_EVENT),
    # TLS 1.3: the peer refused our certificate after the device's first message went out
    (RELAY_OPENING, REJECTED): Transition(REFUSING, _REFUSE, FROM_EVENT),
}  # fmt: skip
# DICOM only: a device holding an association whose peer leg is lost is told so (A-ABORT).
ASSOCIATION: dict[tuple[str, str], Transition] = {
    (RELAY, TRUNCATED): Transition(CLOSED, (ABORT_DEVICE, LOG_RESULT), ev.RESULT_TRUNCATED),
    (RELAY, RESET): Transition(CLOSED, (ABORT_DEVICE, LOG_RESULT), ev.RESULT_RESET),
}
# DICOM's refusal ends when the requester closes (or ARTIM ends the wait): the result is logged
# when the RJ is out, the close that follows logs nothing.
AWAITING_CLOSE: dict[tuple[str, str], Transition] = {
    (REFUSING, ANSWERED): Transition(AWAIT_CLOSE, (LOG_RESULT, START_ARTIM), FROM_EVENT),
    (AWAIT_CLOSE, EOF): Transition(CLOSED, (CLOSE_GRACEFUL,)),
    (AWAIT_CLOSE, TIMEOUT): Transition(CLOSED, (CLOSE_GRACEFUL,)),
    (AWAIT_CLOSE, RESET): Transition(CLOSED, (RESET_BOTH,)),
    (AWAIT_CLOSE, DRAIN_DEADLINE): Transition(CLOSED, (CLOSE_GRACEFUL,)),
    (AWAIT_CLOSE, INTERNAL_ERROR): Transition(CLOSED, (RESET_BOTH,)),
}
PROTOCOL_TABLES = {"dicom": {**ANSWERING, **ASSOCIATION, **AWAITING_CLOSE}, "hl7": ANSWERING}
# An inbound `protocol: dicom | hl7` port whose device cannot be reached answers the TLS client's
# first message inside TLS (A-ASSOCIATE-RJ, ACK AE), then close_notify and FIN.
INBOUND_ANSWERING: dict[tuple[str, str], Transition] = {
    (CONNECTING, CONNECT_FAILED): Transition(REFUSING, _REFUSE, ev.CONNECT_FAILED),
    (CONNECTING, TIMEOUT): Transition(REFUSING, _REFUSE, ev.CONNECT_FAILED),
}
INBOUND_TABLES = {"dicom": {**INBOUND_ANSWERING, **AWAITING_CLOSE}, "hl7": INBOUND_ANSWERING}
# The protocols whose refusal waits for the requester to close (no close_notify with the answer).
AWAITS_CLOSE = frozenset(
    p
    for p, t in PROTOCOL_TABLES.items()
    if (REFUSING, ANSWERED) in t and t[REFUSING, ANSWERED].next == AWAIT_CLOSE
)


def step(state: str, event: str, protocol: str = "", inbound: bool = False) -> Transition:
    """The transition `event` makes from `state`; on a route with a `protocol` (dicom, hl7) its
    table in PROTOCOL_TABLES (INBOUND_TABLES for an inbound port) comes first. ProtocolError if
    the state does not take it."""
    if protocol:
        t = (INBOUND_TABLES if inbound else PROTOCOL_TABLES)[protocol].get((state, event))
        if t is not None:
            return t
    try:
        return TABLE[state, event]
    except KeyError:
        raise ProtocolError(f"event {event!r} in state {state!r}") from None


def result_of(t: Transition, reason: str) -> str:
    """The transition's result, with `reason` (the event's) where the table defers to it."""
    return reason if t.result is FROM_EVENT else t.result
