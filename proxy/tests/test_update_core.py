"""The health gate's decisions, the `rauc status` reader and the update state file
(medtls.core.update): every row of the decision table, real rauc 1.8 outputs captured on this
host (tests/data/rauc/), the rauc 1.13+ shape read from its source, and property tests."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from medtls.core import update as u

DATA = Path(__file__).parent / "data" / "rauc"
BOOT1, BOOT2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def facts(booted="A", b_status="good", primary="rootfs.0"):
    slot = lambda name, boot, state, status: {name: {  # noqa: E731
        "class": "rootfs", "device": f"/dev/{name}", "type": "ext4", "bootname": boot,
        "state": state, "boot_status": status,
        "slot_status": {"bundle": {"compatible": None}}}}  # fmt: skip
    doc = {
        "compatible": "medtls-arm64", "booted": booted, "boot_primary": primary,
        "slots": [slot("rootfs.0", "A", "booted" if booted == "A" else "inactive", "good"),
                  slot("rootfs.1", "B", "booted" if booted == "B" else "inactive", b_status)],
    }  # fmt: skip
    return u.parse_rauc_status(json.dumps(doc).encode())


PENDING = u.installed(None, "B", "A", "2.0+build7", 1000.0, BOOT1)
HEALTHY = u.Checks()
SICK = u.Checks(serving="medtls does not answer: no such file", ruleset="ruleset not loaded")


def test_pending_and_healthy_commits():
    a = u.decide(facts("B"), PENDING, HEALTHY, 3, 300, BOOT2)
    assert a.kind == "commit" and a.slot == "B"


def test_pending_unhealthy_waits_until_the_timeout_then_falls_back_with_the_reason():
    assert u.decide(facts("B"), PENDING, SICK, 299, 300, BOOT2).kind == "wait"
    a = u.decide(facts("B"), PENDING, SICK, 300, 300, BOOT2)
    assert a.kind == "fall_back"
    assert "medtls does not answer" in a.reason and "ruleset not loaded" in a.reason


def test_checks_not_run_yet_waits():
    assert u.decide(facts("B"), PENDING, None, 999, 300, BOOT2).kind == "wait"


def test_booting_the_old_slot_after_an_install_is_a_fallback_to_report():
    a = u.decide(facts("A", b_status="bad"), PENDING, None, 0, 300, BOOT2)
    assert a.kind == "report_fallback" and a.slot == "B"
    assert "slot B was marked bad" in a.reason and "booted A" in a.reason
    a = u.decide(facts("A"), PENDING, None, 0, 300, BOOT2)
    assert a.kind == "report_fallback" and "slot B did not boot" in a.reason


def test_nothing_pending_is_nothing():
    assert u.decide(facts("A"), None, None, 0, 300, BOOT2).kind == "nothing"
    for state in (u.committed(PENDING, 2000), u.fell_back(PENDING, 2000, "x")):
        assert u.decide(facts("A"), state, SICK, 999, 300, BOOT2).kind == "nothing"


def test_installed_but_not_rebooted_yet_is_nothing():
    a = u.decide(facts("A", primary="rootfs.1"), PENDING, None, 999, 300, BOOT1)
    assert a.kind == "nothing" and "reboot" in a.reason


def test_fallbacks_count_over_installs():
    s = u.fell_back(PENDING, 2000, "medtls does not answer")
    s = u.installed(s, "B", "A", "2.1", 3000, BOOT2)
    assert s.outcome == "pending" and s.fallbacks == 1
    assert u.fell_back(s, 4000, "x").fallbacks == 2


def test_status_lines():
    assert u.status_line(None) is None
    warn, line = u.status_line(u.committed(PENDING, 86400))
    assert not warn and line == "update: slot B committed, version 2.0+build7, 1970-01-02T00:00:00Z"
    warn, line = u.status_line(u.fell_back(PENDING, 86400, "medtls does not answer"))
    assert warn and line.startswith(
        "update: FELL BACK to A at 1970-01-02T00:00:00Z: medtls does not answer"
    )


# ------------------------------------------------------------------ real rauc outputs


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.json")))
def test_real_rauc_outputs_parse(name):
    doc = json.loads((DATA / name).read_text())
    f = u.parse_rauc_status((DATA / name).read_bytes())
    assert f.booted == doc["booted"]
    assert {s.name for s in f.slots} == {"rootfs.0", "rootfs.1"}


def test_real_rauc_output_after_install_names_version_and_primary():
    f = u.parse_rauc_status((DATA / "rauc-1.8-installed-b.json").read_bytes())
    assert f.booted == "A" and f.primary == "B"
    assert f.slot("B").version == "2.0" and f.slot("B").installed
    f = u.parse_rauc_status((DATA / "rauc-1.8-fell-back.json").read_bytes())
    assert f.booted == "A" and f.slot("B").boot_status == "bad"


def test_rauc_1_13_shape_with_system_version_and_artifact_repositories():
    # src/main.c r_status_formatter_json of rauc v1.13..v1.16: new top-level keys, the rest alike
    doc = json.loads((DATA / "rauc-1.8-installed-b.json").read_text())
    doc = {"system_version": "2025.1", **doc, "artifact-repositories": []}
    f = u.parse_rauc_status(json.dumps(doc).encode())
    assert f.slot("B").version == "2.0"


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda d: d.update(slots=[]), "slots: must be a list"),
        (lambda d: d["slots"][1]["rootfs.0"].update(state="inactive"), "no booted slot"),
        (lambda d: d["slots"][0]["rootfs.1"].update(state="booted"), "more than one booted"),
        (lambda d: d["slots"][0]["rootfs.1"].update(boot_status="maybe"), "boot_status"),
        (lambda d: d["slots"][0]["rootfs.1"].update(bootname="A"), "'A' appears twice"),
        (lambda d: d.update(boot_primary="rootfs.9"), "boot_primary"),
        (lambda d: d.update(booted="B"), "booted: 'B' is not"),
        (lambda d: d.update(compatible=7), "compatible"),
    ],
)
def test_bad_rauc_status_is_refused_by_name(mutate, problem):
    doc = json.loads((DATA / "rauc-1.8-booted-a.json").read_text())
    mutate(doc)
    with pytest.raises(u.RaucStatusError, match="rauc status: .*" + problem.split(":")[0]):
        u.parse_rauc_status(json.dumps(doc).encode())


def test_oversized_and_duplicate_keys_refused():
    with pytest.raises(u.RaucStatusError, match="larger than"):
        u.parse_rauc_status(b" " * (u.MAX_RAUC_STATUS_BYTES + 1))
    with pytest.raises(u.RaucStatusError, match="duplicate key"):
        u.parse_rauc_status(b'{"compatible": "a", "compatible": "b"}')


# ------------------------------------------------------------------ the state file


def test_state_round_trip(tmp_path):
    p = tmp_path / "update" / "state.json"
    assert u.read_state(p) is None
    s = u.fell_back(PENDING, 2000, "medtls does not answer")
    u.write_state(p, s)
    assert u.read_state(p) == s


def test_state_written_by_an_admin_shell_is_readable_by_the_daemon(tmp_path):
    """`medtls update install` runs as root from an admin's shell whose umask (027 on a hardened
    box) would leave the file unreadable to the medtls user, whose `medtls status` reports it:
    seen in the arm64 VM as "update: ...state.json: cannot read: Permission denied"."""
    p = tmp_path / "update" / "state.json"
    old = os.umask(0o077)
    try:
        u.write_state(p, PENDING)
        u.write_state(p, u.fell_back(PENDING, 2000, "medtls does not answer"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert [f.name for f in p.parent.iterdir()] == ["state.json"]  # no temporary file left


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[]", "must be a JSON object"),
        ('{"outcome": "pending"}', "slot missing"),
        (u.state_json(PENDING).replace('"pending"', '"maybe"'), "outcome: must be one of"),
        (u.state_json(PENDING).replace('"fallbacks": 0', '"fallbacks": -1'), "fallbacks"),
        (u.state_json(PENDING).replace('"fallbacks": 0', '"fallbacks": 0, "x": 1'), "unknown key"),
        (u.state_json(PENDING).replace("1000.0", "NaN"), "NaN is not allowed"),
    ],
)
def test_bad_state_file_is_refused_by_name(tmp_path, text, problem):
    p = tmp_path / "state.json"
    p.write_text(text)
    with pytest.raises(u.StateFileError, match=f"{p}: .*{problem}"):
        u.read_state(p)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_json_gives_facts_or_rauc_status_error(doc):
    try:
        data = json.dumps(doc).encode()
    except ValueError:
        return
    for parse, error in (
        (u.parse_rauc_status, u.RaucStatusError),
        (u.parse_state, u.StateFileError),
    ):
        with contextlib.suppress(error):
            parse(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_give_a_result_or_the_documented_error(data):
    for parse, error in (
        (u.parse_rauc_status, u.RaucStatusError),
        (u.parse_state, u.StateFileError),
        (u.parse_bundle_info, u.RaucStatusError),
    ):
        with contextlib.suppress(error):
            parse(data)


@settings(max_examples=200, deadline=None)
@given(
    booted=st.sampled_from("AB"),
    b_status=st.sampled_from(u.BOOT_STATUSES),
    outcome=st.sampled_from(u.OUTCOMES),
    same_boot=st.booleans(),
    serving=st.none() | st.just("down"),
    elapsed=st.floats(0, 1000),
)
def test_decide_always_returns_one_known_action(
    booted, b_status, outcome, same_boot, serving, elapsed
):
    state = u.UpdateState(outcome, "B", "A", "2.0", 1.0, BOOT1)
    a = u.decide(
        facts(booted, b_status),
        state,
        u.Checks(serving=serving),
        elapsed,
        300,
        BOOT1 if same_boot else BOOT2,
    )
    assert a.kind in u.ACTIONS
    if a.kind in ("commit", "fall_back"):  # only ever on the slot on trial, after a reboot
        assert booted == "B" and outcome == "pending" and not same_boot
    if a.kind == "fall_back":
        assert elapsed >= 300 and serving
    # a state file written and read back decides alike
    assert u.parse_state(u.state_json(state).encode()) == state
