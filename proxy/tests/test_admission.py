"""Admission and accept back-off without sockets (medtls.engine.listeners)."""

from __future__ import annotations

import time

import pytest
from medtls.core import events as ev
from medtls.engine import fdlimit, listeners
from medtls.engine.listeners import AcceptBackoff, Admission, ListenerSpec, source_key


@pytest.fixture
def admission(monkeypatch):
    def make(connections=4, handshakes=3, per_source=2, warning=""):
        caps = fdlimit.Caps(connections, handshakes, per_source, warning)
        monkeypatch.setattr(fdlimit, "raise_and_fit", lambda limits: caps)
        return Admission(object())

    return make


def test_max_connections_counts_authenticated_connections_only(admission):
    a = admission(connections=2)
    a.begin(1, "10.0.0.1", time.monotonic())
    # Three open, one of them still in its handshake: two count against max_connections.
    assert a.refusal(3, "inbound", "10.0.0.2")[0] == ev.LIMIT
    assert a.refusal(2, "outbound", "10.0.0.2") is None  # one of the two is still handshaking
    a.end(1)
    assert a.refusal(2, "outbound", "x") == (ev.LIMIT, "limits.max_connections (2) reached")


def test_handshake_budget_is_for_inbound_only(admission):
    a = admission(connections=100, handshakes=2, per_source=100)
    a.begin(1, "10.0.0.1", 0.0)
    a.begin(2, "10.0.0.2", 0.0)
    assert a.refusal(2, "inbound", "10.0.0.3")[0] == ev.HANDSHAKE_LIMIT
    assert a.refusal(2, "outbound", "10.0.0.3") is None
    a.end(2)
    assert a.refusal(1, "inbound", "10.0.0.3") is None


def test_per_source_cap_counts_stalled_handshakes_only(admission):
    a = admission(connections=100, handshakes=100, per_source=2)
    now = time.monotonic()
    a.begin(1, "10.0.0.1", now)
    a.begin(2, "10.0.0.1", now)
    assert a.refusal(2, "inbound", "10.0.0.1") is None  # completing many at once: served
    a.begin(3, "10.0.0.9", now)
    a.pending[1] = ("10.0.0.1", now - listeners.STALLED_HANDSHAKE - 1)
    a.pending[2] = ("10.0.0.1", now - listeners.STALLED_HANDSHAKE - 1)
    reason, detail = a.refusal(3, "inbound", "10.0.0.1")
    assert reason == ev.SOURCE_LIMIT and detail.endswith("reached: 10.0.0.1")
    assert a.refusal(3, "inbound", "10.0.0.2") is None
    a.end(1)
    assert a.refusal(2, "inbound", "10.0.0.1") is None
    a.end(1)  # ending twice (authenticated, then closed) is harmless
    assert a.refusal(2, "inbound", "10.0.0.1") is None


def test_lowered_caps_say_so(admission):
    a = admission(connections=1, warning="lowered")
    assert "lowered to fit RLIMIT_NOFILE" in a.refusal(1, "outbound", "x")[1]


def test_source_key_groups_ipv6_by_64():
    assert source_key("10.0.0.1") == "10.0.0.1"
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert source_key("not:an:address") == "not:an:address"


def test_accept_backoff_doubles_while_nothing_is_accepted():
    b = AcceptBackoff()
    spec = ListenerSpec("inbound", "127.0.0.1", 1)
    sock = object()
    first, last = listeners.ACCEPT_BACKOFF
    assert b.pause(sock, spec, "too many open files", progress=False, now=0.0) == first
    assert b.due(first / 2) == []
    assert b.due(first) == [(spec, sock)]
    assert b.pause(sock, spec, "too many open files", progress=False, now=1.0) == 1.0 + 2 * first
    b.due(10.0)
    for _ in range(10):
        until = b.pause(sock, spec, "too many open files", progress=False, now=20.0)
    assert until == 20.0 + last
    b.accepted(spec)
    assert b.pause(sock, spec, "too many open files", progress=False, now=30.0) == 30.0 + first


def test_accept_backoff_after_progress_retries_on_the_next_turn():
    b = AcceptBackoff()
    spec = ListenerSpec("outbound", "127.0.0.1", 1)
    assert b.pause(object(), spec, "too many open files", progress=True, now=0.0) is None
    assert b.paused == {}
