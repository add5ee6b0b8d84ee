"""The event loop outlives any one connection's bug: an unexpected exception while handling a
connection resets that connection (result=internal_error, one traceback in the log) and the
daemon goes on serving. The exception is injected: no real input is known to raise one."""

from __future__ import annotations

import logging

from medtls.engine import connection
from medtls.engine import daemon as daemon_mod
from test_lifecycle import daemon_env, try_echo, wait_for  # noqa: F401 (fixture)


def _raise_once(real):
    calls = []

    def flaky(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("injected bug")
        return real(*args)

    return flaky


def test_exception_in_handshake_handling_resets_only_that_connection(
    pki, request, monkeypatch, caplog
):
    monkeypatch.setattr(daemon_mod, "peer_identity", _raise_once(daemon_mod.peer_identity))
    _, rec, port, _ = request.getfixturevalue("daemon_env")
    with caplog.at_level(logging.ERROR, logger="medtls"):
        assert try_echo(pki, port, "box-a") == b""
        assert wait_for(lambda: ("handshake_failed", "internal_error") in rec.events)
        assert try_echo(pki, port, "box-a") == b"ping"  # the same daemon, next connection
    errors = [r for r in caplog.records if "internal error in connection" in r.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info and "injected bug" in caplog.text


def test_exception_while_relaying_resets_only_that_connection(pki, request, monkeypatch):
    monkeypatch.setattr(daemon_mod.relay, "pump", _raise_once(daemon_mod.relay.pump))
    d, rec, port, _ = request.getfixturevalue("daemon_env")
    assert try_echo(pki, port, "box-a") == b""
    assert wait_for(lambda: any(e[-1:] == ("internal_error",) for e in rec.events))
    assert try_echo(pki, port, "box-a") == b"ping"
    # nothing closed is kept (read from this thread while the daemon may be mid-close: wait)
    assert wait_for(lambda: all(c.state != "closed" for c in list(d.conns.values())))


def test_event_refused_by_the_state_machine_resets_only_that_connection(pki, request, monkeypatch):
    """A transition the table does not have (a daemon bug) raises ProtocolError; the loop guard
    turns it into internal_error for that connection, fed to its machine like any event."""
    real_step = connection.step
    refused = []

    def step(state, event, *args, **kwargs):
        if event == connection.CLIENT_AUTHORIZED and not refused:
            refused.append(state)
            raise connection.ProtocolError(f"event {event!r} in state {state!r}")
        return real_step(state, event, *args, **kwargs)

    monkeypatch.setattr(connection, "step", step)
    d, rec, port, _ = request.getfixturevalue("daemon_env")
    assert try_echo(pki, port, "box-a") == b""
    assert wait_for(lambda: ("handshake_failed", "internal_error") in rec.events)
    assert refused == [connection.VERIFYING]
    assert try_echo(pki, port, "box-a") == b"ping"
    assert wait_for(lambda: not d.conns)
