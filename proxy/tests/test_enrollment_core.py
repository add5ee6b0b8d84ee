"""core.enrollment: when to renew, how long to back off, what to do now, and the strict reading
of state.json (outside input: hostile files give a StateFileError, never a traceback)."""

from __future__ import annotations

import json
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from medtls.core import enrollment as en

DAY = 86400.0
times = st.floats(min_value=1.6e9, max_value=2.5e9, allow_nan=False)
lifetimes = st.floats(min_value=60.0, max_value=3 * 365 * DAY, allow_nan=False)
fractions = st.floats(min_value=0.1, max_value=0.95)
seeds = st.integers(0, 2**32)


@given(times, lifetimes, fractions, seeds)
def test_renewal_is_jittered_before_the_configured_fraction(nb, life, renew_at, seed):
    at = en.renewal_time(nb, nb + life, renew_at, None, random.Random(seed))
    assert nb + life * (renew_at - en.RENEW_JITTER) - 1e-6 <= at <= nb + life * renew_at + 1e-6
    assert at < nb + life


@given(times, lifetimes, fractions, st.floats(0, 1), st.floats(0, 1), seeds)
def test_an_ari_window_only_brings_renewal_earlier(nb, life, renew_at, a, b, seed):
    start, end = sorted((nb + life * a, nb + life * b))
    plain = en.renewal_time(nb, nb + life, renew_at, None, random.Random(seed))
    at = en.renewal_time(nb, nb + life, renew_at, (start, end), random.Random(seed))
    assert at <= plain
    assert at >= min(start, plain)


def test_a_7_day_and_a_2_year_certificate_renew_at_two_thirds():
    rng = random.Random(1)
    for life in (7 * DAY, 730 * DAY):
        at = en.renewal_time(0.0, life, 0.667, None, rng)
        assert 0.62 * life < at <= 0.667 * life


@given(st.integers(1, 10_000), seeds)
def test_retry_delay_backs_off_and_is_capped(attempts, seed):
    d = en.retry_delay(attempts, random.Random(seed))
    assert 0 < d <= en.RETRY_CAP
    assert d >= min(en.RETRY_CAP, en.RETRY_BASE * 2 ** min(attempts - 1, 30)) / 2 - 1e-9


def test_retry_delay_grows():
    lows = [en.retry_delay(n, random.Random(0)) for n in range(1, 10)]
    assert lows == sorted(lows) and lows[0] < 61 and lows[-1] > 3600


states = st.builds(
    en.EnrollmentState,
    phase=st.sampled_from(en.PHASES),
    serial=st.none() | st.just("ab12"),
    not_before=st.none() | times,
    not_after=st.none() | times,
    next_renewal=st.none() | times,
    attempts=st.integers(0, 50),
)


@given(st.none() | states, times, st.booleans())
def test_decide_never_acts_before_the_next_attempt_is_due(state, now, has_cert):
    d = en.decide(state, now, has_cert)
    assert d.action in en.ACTIONS and d.reason
    if state is not None and state.next_renewal is not None and now < state.next_renewal:
        assert d == en.Decision("wait", state.next_renewal, d.reason)
    elif not has_cert:
        assert d.action == "enroll"
    else:
        assert d.action in ("enroll", "renew") and d.at == now


@given(times, lifetimes, seeds, st.text(max_size=3000))
def test_a_failure_keeps_the_certificate_and_backs_off(nb, life, seed, error):
    rng = random.Random(seed)
    ok = en.succeeded(nb, "ab12", nb, nb + life, 0.667, None, rng)
    now = ok.next_renewal
    bad = en.failed(ok, now, error, rng)
    assert (bad.serial, bad.not_after, bad.last_success) == (ok.serial, ok.not_after, nb)
    assert bad.attempts == 1 and bad.next_renewal > now
    assert len(bad.last_error) <= en.MAX_ERROR_CHARS
    assert en.decide(bad, now, True).action == "wait"
    assert bad.phase == ("failed" if now < nb + life else "expired")
    assert en.failed(None, now, "x", rng).phase == "enrolling"


# ------------------------------------------------------------------ the state file


@given(st.none() | states)
def test_state_round_trips(state):
    state = state or en.EnrollmentState()
    assert en.parse_state(en.state_json(state).encode()) == state


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=20,
)  # fmt: skip
keys = st.sampled_from([*en._FIELDS, "other"])


@settings(max_examples=300)
@given(st.dictionaries(keys, json_values, max_size=8) | json_values)
def test_hostile_json_gives_a_clear_error_or_a_valid_state(raw):
    data = json.dumps(raw).encode()
    try:
        state = en.parse_state(data, "/var/lib/medtls/enrollment/state.json")
    except en.StateFileError as e:
        assert str(e).startswith("/var/lib/medtls/enrollment/state.json: ")
        return
    assert state.phase in en.PHASES and state.attempts >= 0


@given(st.binary(max_size=300))
def test_hostile_bytes_give_a_clear_error_or_a_valid_state(data):
    try:
        en.parse_state(data)
    except en.StateFileError as e:
        assert str(e)


@pytest.mark.parametrize(
    "data, message",
    [
        (b'{"phase": "valid", "phase": "failed"}', "duplicate key 'phase'"),
        (b'{"phase": "valid", "not_after": NaN}', "NaN is not allowed"),
        (b'{"phase": "valid", "attempts": ' + b"9" * 5000 + b"}", "not a valid state file"),
        (b"[" * 100000 + b"]" * 100000, "larger than"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"phase": "valid", "serial": "ZZ"}', "serial: must be 1-64 lower-case hex digits"),
        (b'{"phase": "bogus"}', "phase: must be one of"),
        (b'{"phase": "valid", "ari_window": [2, 1]}', "ari_window: start is after end"),
        (b'{"attempts": 0}', "phase missing"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_state_files_are_named(data, message, tmp_path):
    p = tmp_path / "state.json"
    p.write_bytes(data)
    with pytest.raises(en.StateFileError) as e:
        en.read_state(p)
    assert str(e.value).startswith(f"{p}: ") and message in str(e.value)


def test_write_is_atomic_and_missing_file_is_no_state(tmp_path):
    p = tmp_path / "state.json"
    assert en.read_state(p) is None
    s = en.succeeded(1.7e9, "ab", 1.7e9, 1.7e9 + 7 * DAY, 0.667, (1.7e9 + DAY, 1.7e9 + 2 * DAY),
                     random.Random(0))  # fmt: skip
    en.write_state(p, s)
    assert en.read_state(p) == s
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left


# ------------------------------------------------------------------ health


def _cert_status(now, not_before, not_after):
    return {"ready": True, "listeners": ["x"], "now": now,
            "certificates": [{"role": "identity", "subject": "CN=ct", "path": "p",
                              "not_before": not_before, "not_after": not_after}]}  # fmt: skip


@pytest.mark.parametrize(
    "life_days, left_days, level",
    [(7, 5, 0), (7, 2, 1), (7, 0.5, 2), (730, 200, 0), (730, 10, 1), (730, 2, 2), (90, 20, 0)],
)
def test_expiry_levels_are_a_fraction_of_the_lifetime(life_days, left_days, level):
    from medtls.ops import health

    now = 2e9
    status = _cert_status(now, now - (life_days - left_days) * DAY, now + left_days * DAY)
    assert health.evaluate(status)[0] == level


def test_enrolling_is_not_healthy_and_says_why():
    from medtls.ops import health

    status = {"ready": True, "listeners": ["x"], "now": 2e9,
              "enrollment": {"phase": "enrolling", "last_error": "CA unreachable"}}  # fmt: skip
    level, problems = health.evaluate(status)
    assert level == health.CRITICAL
    assert "enrolling: no identity certificate issued yet; last error: CA unreachable" in str(
        problems
    )
    status["enrollment"] = {"phase": "failed", "attempts": 3, "last_error": "timeout",
                            "next_renewal": 2e9 + 60}  # fmt: skip
    level, problems = health.evaluate(status)
    assert level == health.WARNING and "renewal failing (3 attempts" in str(problems)
