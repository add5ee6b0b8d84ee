"""The connection state machine without sockets: every transition of the table, every pair it
refuses, and whole connections as event sequences."""

from __future__ import annotations

import itertools

import pytest
from medtls.core import events as ev
from medtls.engine import connection as cx

FROM = cx.FROM_EVENT
SETUP = (cx.ACCEPTED, cx.CONNECTING_TLS, cx.CONNECTING, cx.AWAIT_HELLO, cx.HANDSHAKE, cx.VERIFYING)
OPEN = (*SETUP, cx.RELAY_OPENING, cx.RELAY, cx.READING_FIRST)

# The specification, written out: (state, event) -> (next state, result). A result names the
# failure reason or the close result ("" while the connection lives; FROM: the event's reason).
EXPECTED = {
    (cx.ACCEPTED, cx.ROUTE_OUTBOUND): (cx.CONNECTING_TLS, ""),
    (cx.ACCEPTED, cx.ROUTE_PLAINTEXT): (cx.CONNECTING, ""),
    (cx.ACCEPTED, cx.ROUTE_INBOUND): (cx.AWAIT_HELLO, ""),
    (cx.ACCEPTED, cx.NO_ROUTE): (cx.CLOSED, ev.NO_ROUTE),
    (cx.ACCEPTED, cx.REFUSED): (cx.CLOSED, FROM),
    (cx.ACCEPTED, cx.GATE_CLOSED): (cx.CLOSED, ev.CLOCK_UNSYNCED),
    (cx.CONNECTING_TLS, cx.CONNECTED): (cx.HANDSHAKE, ""),
    (cx.CONNECTING_TLS, cx.CONNECT_FAILED): (cx.CLOSED, ev.CONNECT_FAILED),
    (cx.CONNECTING_TLS, cx.TIMEOUT): (cx.CLOSED, ev.CONNECT_FAILED),
    (cx.CONNECTING, cx.CONNECTED): (cx.RELAY_OPENING, ""),
    (cx.CONNECTING, cx.CONNECT_FAILED): (cx.CLOSED, ev.CONNECT_FAILED),
    (cx.CONNECTING, cx.TIMEOUT): (cx.CLOSED, ev.CONNECT_FAILED),
    (cx.AWAIT_HELLO, cx.HELLO): (cx.HANDSHAKE, ""),
    (cx.AWAIT_HELLO, cx.RESET): (cx.CLOSED, ev.HANDSHAKE_ERROR),
    (cx.AWAIT_HELLO, cx.TIMEOUT): (cx.CLOSED, ev.TIMEOUT),
    (cx.HANDSHAKE, cx.HANDSHAKE_DONE): (cx.VERIFYING, ""),
    (cx.HANDSHAKE, cx.HANDSHAKE_FAILED): (cx.CLOSED, FROM),
    (cx.HANDSHAKE, cx.RESET): (cx.CLOSED, ev.HANDSHAKE_ERROR),
    (cx.HANDSHAKE, cx.TIMEOUT): (cx.CLOSED, ev.TIMEOUT),
    (cx.VERIFYING, cx.IDENTITY_REFUSED): (cx.CLOSED, FROM),
    (cx.VERIFYING, cx.ACL_DENIED): (cx.CLOSED, ev.ACL_DENIED),
    (cx.VERIFYING, cx.PEER_VERIFIED): (cx.RELAY_OPENING, ""),
    (cx.VERIFYING, cx.CLIENT_AUTHORIZED): (cx.CONNECTING, ""),
    # inbound dicom, calling AE titles bound to the certificate: the RQ before the device
    (cx.VERIFYING, cx.CLIENT_AUTHORIZED_AE): (cx.READING_FIRST, ""),
    (cx.READING_FIRST, cx.FIRST_MESSAGE): (cx.CONNECTING, ""),
    (cx.READING_FIRST, cx.AE_REFUSED): (cx.REFUSING, ev.CALLING_AE_REFUSED),
    (cx.READING_FIRST, cx.RESET): (cx.CLOSED, ev.RESULT_RESET),
    (cx.READING_FIRST, cx.TIMEOUT): (cx.CLOSED, ev.TIMEOUT),
    (cx.RELAY_OPENING, cx.FIRST_DATA): (cx.RELAY, ""),
    (cx.RELAY_OPENING, cx.REJECTED): (cx.CLOSED, FROM),
    (cx.RELAY_OPENING, cx.EOF): (cx.CLOSED, ev.RESULT_OK),
    (cx.RELAY_OPENING, cx.TRUNCATED): (cx.CLOSED, ev.RESULT_TRUNCATED),
    (cx.RELAY_OPENING, cx.RESET): (cx.CLOSED, ev.RESULT_RESET),
    (cx.RELAY_OPENING, cx.IDLE): (cx.CLOSED, ev.RESULT_IDLE),
    (cx.RELAY, cx.EOF): (cx.CLOSED, ev.RESULT_OK),
    (cx.RELAY, cx.TRUNCATED): (cx.CLOSED, ev.RESULT_TRUNCATED),
    (cx.RELAY, cx.RESET): (cx.CLOSED, ev.RESULT_RESET),
    (cx.RELAY, cx.IDLE): (cx.CLOSED, ev.RESULT_IDLE),
    **{(s, cx.INTERNAL_ERROR): (cx.CLOSED, ev.INTERNAL_ERROR) for s in OPEN},
    **{(s, cx.DRAIN_DEADLINE): (cx.CLOSED, ev.RESULT_SHUTDOWN) for s in OPEN},
    # refusing in the device's protocol: the result stays the failure that led there
    (cx.REFUSING, cx.ANSWERED): (cx.CLOSED, FROM),
    (cx.REFUSING, cx.RESET): (cx.CLOSED, FROM),
    (cx.REFUSING, cx.TIMEOUT): (cx.CLOSED, FROM),
    (cx.REFUSING, cx.INTERNAL_ERROR): (cx.CLOSED, ev.INTERNAL_ERROR),
    (cx.REFUSING, cx.DRAIN_DEADLINE): (cx.CLOSED, ev.RESULT_SHUTDOWN),
}
# Outbound routes with `protocol: dicom | hl7`: a failed peer leg refuses in the protocol.
EXPECTED_ANSWERING = {
    (cx.ACCEPTED, cx.GATE_CLOSED): (cx.REFUSING, ev.CLOCK_UNSYNCED),
    (cx.CONNECTING_TLS, cx.CONNECT_FAILED): (cx.REFUSING, ev.CONNECT_FAILED),
    (cx.CONNECTING_TLS, cx.TIMEOUT): (cx.REFUSING, ev.CONNECT_FAILED),
    (cx.HANDSHAKE, cx.HANDSHAKE_FAILED): (cx.REFUSING, FROM),
    (cx.HANDSHAKE, cx.RESET): (cx.REFUSING, ev.HANDSHAKE_ERROR),
    (cx.HANDSHAKE, cx.TIMEOUT): (cx.REFUSING, ev.TIMEOUT),
    (cx.VERIFYING, cx.IDENTITY_REFUSED): (cx.REFUSING, FROM),
    (cx.RELAY_OPENING, cx.REJECTED): (cx.REFUSING, FROM),
}
# DICOM only: a lost peer leg aborts the association.
EXPECTED_ASSOCIATION = {
    (cx.RELAY, cx.TRUNCATED): (cx.CLOSED, ev.RESULT_TRUNCATED),
    (cx.RELAY, cx.RESET): (cx.CLOSED, ev.RESULT_RESET),
}
# DICOM only (PS3.8 Sta13): after the A-ASSOCIATE-RJ the requester closes; ARTIM bounds the wait.
# The result was logged with the RJ; these log nothing more.
EXPECTED_AWAIT_CLOSE = {
    (cx.REFUSING, cx.ANSWERED): (cx.AWAIT_CLOSE, FROM),
    (cx.AWAIT_CLOSE, cx.EOF): (cx.CLOSED, ""),
    (cx.AWAIT_CLOSE, cx.TIMEOUT): (cx.CLOSED, ""),
    (cx.AWAIT_CLOSE, cx.RESET): (cx.CLOSED, ""),
    (cx.AWAIT_CLOSE, cx.DRAIN_DEADLINE): (cx.CLOSED, ""),
    (cx.AWAIT_CLOSE, cx.INTERNAL_ERROR): (cx.CLOSED, ""),
}
# Inbound `protocol: dicom | hl7` ports: a device that cannot be reached is answered inside TLS.
EXPECTED_INBOUND = {
    (cx.CONNECTING, cx.CONNECT_FAILED): (cx.REFUSING, ev.CONNECT_FAILED),
    (cx.CONNECTING, cx.TIMEOUT): (cx.REFUSING, ev.CONNECT_FAILED),
}
CLOSES = (cx.CLOSE_CLEAN, cx.CLOSE_IF_QUIET, cx.RESET_BOTH, cx.ABORT_DEVICE, cx.CLOSE_GRACEFUL)
# Actions that may feed a further event: they come last, so no action runs after a nested close.
REENTRANT = (
    cx.CONNECT, cx.START_TLS_CLIENT, cx.START_TLS_SERVER, cx.CONTINUE_HANDSHAKE,
    cx.CHECK_IDENTITY, cx.START_RELAY, cx.READ_FIRST, cx.START_ARTIM,
)  # fmt: skip


def test_the_table_is_the_specification():
    assert set(cx.TABLE) == set(EXPECTED)


@pytest.mark.parametrize(("state", "event"), sorted(EXPECTED))
def test_transition(state, event):
    t = cx.step(state, event)
    assert (t.next, t.result) == EXPECTED[state, event]
    assert all(a in cx.__dict__.values() for a in t.actions)
    if t.next == cx.CLOSED:
        # Exactly one way of closing, then the connection line and connection_closed.
        assert [a for a in t.actions if a in CLOSES] == [t.actions[-2]]
        assert t.actions[-1] == cx.LOG_RESULT
        # A setup that fails is reported as a failure (handshake_failed); a relay that ends,
        # or anything the drain cuts, is not (except a late rejection of our certificate).
        fails = cx.FAIL in t.actions
        assert fails == ((state in SETUP and event != cx.DRAIN_DEADLINE) or event == cx.REJECTED), (
            t.actions
        )
        clean = t.actions[-2] != cx.RESET_BOTH
        assert clean == (event in (cx.EOF, cx.IDLE, cx.ANSWERED))
    elif t.next == cx.REFUSING:  # a failure, reported, then answered in the protocol
        assert t.actions == (cx.FAIL, cx.READ_FIRST)
    else:
        assert cx.LOG_RESULT not in t.actions and cx.FAIL not in t.actions
        assert not any(a in CLOSES for a in t.actions)
    assert all(a not in REENTRANT for a in t.actions[:-1]), t.actions


def test_failures_after_the_handshake_flush_the_tls_side_first():
    """Our alert, or a client's last flight, leaves before the sockets are reset."""
    for event in (cx.IDENTITY_REFUSED, cx.ACL_DENIED):
        assert cx.step(cx.VERIFYING, event).actions[0] == cx.FLUSH_TLS
    assert cx.step(cx.HANDSHAKE, cx.HANDSHAKE_FAILED).actions[0] == cx.FLUSH_TLS
    assert cx.FLUSH_TLS not in cx.step(cx.HANDSHAKE, cx.RESET).actions  # nothing to say to it


_REFUSED = sorted(
    (s, e) for s, e in itertools.product(cx.STATES, cx.EVENTS) if (s, e) not in EXPECTED
)


@pytest.mark.parametrize(("state", "event"), _REFUSED)
def test_event_not_taken_in_state_raises(state, event):
    with pytest.raises(cx.ProtocolError, match=f"{event}.*{state}"):
        cx.step(state, event)


def test_closed_takes_no_event():
    assert all((cx.CLOSED, e) in _REFUSED for e in cx.EVENTS)


def test_every_state_and_event_is_used_and_every_open_state_is_reachable():
    assert {e for _, e in cx.TABLE} == set(cx.EVENTS)
    reached, todo = {cx.ACCEPTED}, [cx.ACCEPTED]
    every = [*cx.TABLE.items(), *cx.PROTOCOL_TABLES["dicom"].items()]
    while todo:
        s = todo.pop()
        for (state, _), t in every:
            if state == s and t.next not in reached:
                reached.add(t.next)
                todo.append(t.next)
    assert reached == set(cx.STATES)


def test_status_labels_keep_the_four_names():
    assert set(cx.STATUS_LABEL) == set(cx.STATES)
    assert set(cx.STATUS_LABEL.values()) == {"connecting", "handshake", "relay", "closed"}


def test_result_takes_the_events_reason_only_where_the_table_defers_to_it():
    assert cx.result_of(cx.step(cx.ACCEPTED, cx.REFUSED), ev.SOURCE_LIMIT) == ev.SOURCE_LIMIT
    assert cx.result_of(cx.step(cx.VERIFYING, cx.ACL_DENIED), "ignored") == ev.ACL_DENIED


def _run(*events: str | tuple[str, str]) -> tuple[str, list[str], str]:
    """Feed events from ACCEPTED: (final state, every action in order, the last result)."""
    state, actions, result = cx.ACCEPTED, [], ""
    for e in events:
        event, reason = e if isinstance(e, tuple) else (e, "")
        t = cx.step(state, event)
        state = t.next
        actions += t.actions
        result = cx.result_of(t, reason) or result
    return state, actions, result


def test_outbound_connection_ok():
    state, actions, result = _run(
        cx.ROUTE_OUTBOUND, cx.CONNECTED, cx.HANDSHAKE_DONE, cx.PEER_VERIFIED, cx.FIRST_DATA,
        cx.EOF,
    )  # fmt: skip
    assert (state, result) == (cx.CLOSED, ev.RESULT_OK)
    assert actions == [
        cx.CONNECT, cx.START_TLS_CLIENT, cx.CHECK_IDENTITY, cx.TLS_OK, cx.START_RELAY,
        cx.KEEP_SESSION, cx.CLOSE_CLEAN, cx.LOG_RESULT,
    ]  # fmt: skip


def test_outbound_ticket_kept_at_a_close_without_data():
    _, actions, result = _run(
        cx.ROUTE_OUTBOUND, cx.CONNECTED, cx.HANDSHAKE_DONE, cx.PEER_VERIFIED, cx.EOF
    )
    assert result == ev.RESULT_OK and actions[-3:] == [
        cx.KEEP_SESSION, cx.CLOSE_CLEAN, cx.LOG_RESULT,
    ]  # fmt: skip


def test_inbound_acl_denied():
    state, actions, result = _run(cx.ROUTE_INBOUND, cx.HELLO, cx.HANDSHAKE_DONE, cx.ACL_DENIED)
    assert (state, result) == (cx.CLOSED, ev.ACL_DENIED)
    assert actions == [
        cx.START_TLS_SERVER, cx.CONTINUE_HANDSHAKE, cx.CHECK_IDENTITY, cx.FLUSH_TLS, cx.FAIL,
        cx.RESET_BOTH, cx.LOG_RESULT,
    ]  # fmt: skip
    assert cx.TLS_OK not in actions and cx.CONNECT not in actions  # the device never dialled


def test_inbound_ok_dials_the_device_after_authentication():
    state, actions, _ = _run(
        cx.ROUTE_INBOUND, cx.HELLO, cx.HANDSHAKE_DONE, cx.CLIENT_AUTHORIZED, cx.CONNECTED
    )
    assert state == cx.RELAY_OPENING
    assert actions.index(cx.TLS_OK) < actions.index(cx.CONNECT) < actions.index(cx.START_RELAY)


def test_truncation_resets_both_sides():
    state, actions, result = _run(
        cx.ROUTE_INBOUND, cx.HELLO, cx.HANDSHAKE_DONE, cx.CLIENT_AUTHORIZED, cx.CONNECTED,
        cx.FIRST_DATA, cx.TRUNCATED,
    )  # fmt: skip
    assert (state, result) == (cx.CLOSED, ev.RESULT_TRUNCATED)
    assert actions[-2:] == [cx.RESET_BOTH, cx.LOG_RESULT] and cx.FAIL not in actions


def test_drain_cuts_a_relay_and_a_handshake():
    for prefix in ((cx.ROUTE_PLAINTEXT, cx.CONNECTED), (cx.ROUTE_INBOUND, cx.HELLO)):
        state, actions, result = _run(*prefix, cx.DRAIN_DEADLINE)
        assert (state, result) == (cx.CLOSED, ev.RESULT_SHUTDOWN)
        assert actions[-2:] == [cx.RESET_BOTH, cx.LOG_RESULT] and cx.FAIL not in actions


def test_handshake_timeout():
    state, actions, result = _run(cx.ROUTE_OUTBOUND, cx.CONNECTED, cx.TIMEOUT)
    assert (state, result) == (cx.CLOSED, ev.TIMEOUT)
    assert actions[-3:] == [cx.FAIL, cx.RESET_BOTH, cx.LOG_RESULT]
    # Waiting for the ClientHello counts against the same deadline.
    assert _run(cx.ROUTE_INBOUND, cx.TIMEOUT)[2] == ev.TIMEOUT


def test_connect_timeout_is_a_connect_failure():
    assert _run(cx.ROUTE_OUTBOUND, cx.TIMEOUT)[2] == ev.CONNECT_FAILED


def test_limit_refusal():
    state, actions, result = _run((cx.REFUSED, ev.HANDSHAKE_LIMIT))
    assert (state, result) == (cx.CLOSED, ev.HANDSHAKE_LIMIT)
    assert actions == [cx.FAIL, cx.RESET_BOTH, cx.LOG_RESULT]


def test_late_rejection_only_before_first_data():
    base = (cx.ROUTE_OUTBOUND, cx.CONNECTED, cx.HANDSHAKE_DONE, cx.PEER_VERIFIED)
    assert _run(*base, (cx.REJECTED, ev.PEER_UNKNOWN_CA))[2] == ev.PEER_UNKNOWN_CA
    with pytest.raises(cx.ProtocolError):
        _run(*base, cx.FIRST_DATA, (cx.REJECTED, ev.PEER_UNKNOWN_CA))


def test_the_protocol_tables_are_the_specification():
    assert set(cx.PROTOCOL_TABLES["hl7"]) == set(EXPECTED_ANSWERING)
    assert set(cx.PROTOCOL_TABLES["dicom"]) == (
        set(EXPECTED_ANSWERING) | set(EXPECTED_ASSOCIATION) | set(EXPECTED_AWAIT_CLOSE)
    )
    for protocol, table in cx.PROTOCOL_TABLES.items():
        for (state, event), (nxt, result) in {**EXPECTED_ANSWERING, **EXPECTED_ASSOCIATION}.items():
            if (state, event) not in table or (state, event) in EXPECTED_AWAIT_CLOSE:
                continue
            t = cx.step(state, event, protocol)
            assert (t.next, t.result) == (nxt, result)
            if nxt == cx.REFUSING:
                # Reported as the same failure as on a tcp route, then the device is answered.
                assert t.actions[-2:] == (cx.FAIL, cx.READ_FIRST)
                tcp = cx.step(state, event)
                assert tcp.result == t.result and (cx.FLUSH_TLS in tcp.actions) == (
                    cx.FLUSH_TLS in t.actions
                )
            else:
                assert t.actions == (cx.ABORT_DEVICE, cx.LOG_RESULT)


def test_tcp_routes_keep_todays_transitions():
    for state, event in EXPECTED_ANSWERING:
        assert cx.step(state, event, "").next == cx.CLOSED
    assert cx.step(cx.RELAY, cx.RESET, "hl7").actions == (cx.RESET_BOTH, cx.LOG_RESULT)


def test_dicom_peer_down_is_answered_then_the_requester_closes():
    """PS3.8 Sta13: the RJ is logged when it is out; the box then waits for the device to close
    (or ARTIM to end), and closes without logging twice. HL7 closes right after the ACK."""
    for close in (cx.EOF, cx.TIMEOUT):
        state, actions = cx.ACCEPTED, []
        for event in (cx.ROUTE_OUTBOUND, cx.CONNECT_FAILED, cx.ANSWERED, close):
            t = cx.step(state, event, "dicom")
            state, actions = t.next, actions + list(t.actions)
        assert state == cx.CLOSED
        assert actions == [
            cx.CONNECT, cx.FAIL, cx.READ_FIRST, cx.LOG_RESULT, cx.START_ARTIM, cx.CLOSE_GRACEFUL,
        ]  # fmt: skip
    for inbound in (False, True):
        for (state, event), (nxt, result) in EXPECTED_AWAIT_CLOSE.items():
            t = cx.step(state, event, "dicom", inbound=inbound)
            assert (t.next, cx.result_of(t, "r") if result is FROM else t.result) == (
                nxt,
                "r" if result is FROM else result,
            )
            assert cx.LOG_RESULT not in t.actions or state == cx.REFUSING
    hl7 = cx.step(cx.REFUSING, cx.ANSWERED, "hl7")
    assert (hl7.next, hl7.actions) == (cx.CLOSED, (cx.CLOSE_CLEAN, cx.LOG_RESULT))
    assert {"dicom"} == cx.AWAITS_CLOSE


def test_inbound_protocol_tables_are_the_specification():
    for protocol, table in cx.INBOUND_TABLES.items():
        awaits = set(EXPECTED_AWAIT_CLOSE) if protocol == "dicom" else set()
        assert set(table) == set(EXPECTED_INBOUND) | awaits
        for (state, event), (nxt, result) in EXPECTED_INBOUND.items():
            t = cx.step(state, event, protocol, inbound=True)
            assert (t.next, t.result, t.actions) == (nxt, result, (cx.FAIL, cx.READ_FIRST))
    # an inbound handshake failure is no protocol matter: TLS alerts, as on tcp ports
    t = cx.step(cx.HANDSHAKE, cx.HANDSHAKE_FAILED, "dicom", inbound=True)
    assert t.next == cx.CLOSED


def test_calling_ae_is_read_before_the_device_is_dialled():
    t = cx.step(cx.VERIFYING, cx.CLIENT_AUTHORIZED_AE)
    assert t.actions == (cx.TLS_OK, cx.READ_PEER_FIRST)
    assert cx.step(cx.READING_FIRST, cx.FIRST_MESSAGE).actions == (cx.CONNECT,)
    refused = cx.step(cx.READING_FIRST, cx.AE_REFUSED)
    assert refused.actions == (cx.FAIL, cx.READ_FIRST)
