"""`medtls led`: the board LED's pattern per state, against a fake /sys/class/leds."""

from __future__ import annotations

import subprocess
import sys

import pytest
from medtls.ops import boxstate, led

from .test_console import NOW, status


def fake_leds(root, name="ACT", trigger="none [mmc0] timer heartbeat"):
    d = root / "leds" / name
    d.mkdir(parents=True)
    for f, v in (
        ("trigger", trigger),
        ("brightness", "0"),
        ("max_brightness", "255"),
        ("delay_on", ""),
        ("delay_off", ""),
    ):
        (d / f).write_text(v)
    return d


def shown(d) -> dict:
    return {f: (d / f).read_text() for f in ("trigger", "brightness", "delay_on", "delay_off")}


def test_every_state_has_its_own_pattern():
    patterns = [led.pattern_for(s) for s in boxstate.STATES]
    assert len(set(patterns)) == len(boxstate.STATES)
    assert led.pattern_for(boxstate.HEALTHY) == led.Pattern("none", on=True)
    assert led.pattern_for(boxstate.FAIL_CLOSED).delay_on == 100


@pytest.mark.parametrize(
    ("st", "error", "cert", "state"),
    [
        (status(), "", True, boxstate.HEALTHY),
        (None, "connection refused", True, boxstate.FAIL_CLOSED),
        (None, "connection refused", False, boxstate.FAIL_CLOSED),
        (
            status(snapshot={"enrolling": "enrolling: no identity certificate yet"}),
            "",
            False,
            boxstate.NO_CERTIFICATE,
        ),
        (status(ready=False), "", True, boxstate.FAIL_CLOSED),
        (status(listeners=[]), "", True, boxstate.FAIL_CLOSED),
        (
            status(clock={"synchronized": False, "require_sync": True, "detail": "no NTP"}),
            "",
            True,
            boxstate.CLOCK_UNSYNCED,
        ),
        (
            status(
                certificates=[
                    {"role": "identity", "subject": "CN=b", "path": "d.crt", "not_after": NOW - 9}
                ]
            ),
            "",
            True,
            boxstate.NO_CERTIFICATE,
        ),
        (
            status(
                peers=[
                    {
                        "name": "pacs",
                        "direction": "outbound",
                        "last_success": None,
                        "last_failure": NOW - 5,
                        "last_failure_reason": "peer_unknown_ca",
                    }
                ]
            ),
            "",
            True,
            boxstate.WARNING,
        ),
    ],
)
def test_state_of_a_status(st, error, cert, state):
    assert boxstate.classify(st, error, cert, NOW)[0] == state


def test_writer_sets_timer_and_steady_patterns(tmp_path):
    d = fake_leds(tmp_path)
    board = led.Led(d)
    assert board.original == "mmc0"
    board.show(led.pattern_for(boxstate.CLOCK_UNSYNCED))
    assert shown(d) == {
        "trigger": "timer",
        "brightness": "0",
        "delay_on": "200",
        "delay_off": "1800",
    }
    board.show(led.pattern_for(boxstate.HEALTHY))
    assert shown(d)["trigger"] == "none"
    assert shown(d)["brightness"] == "255"  # max_brightness
    (d / "trigger").write_text("untouched")
    board.show(led.pattern_for(boxstate.HEALTHY))  # same pattern: no write (no blink restart)
    assert shown(d)["trigger"] == "untouched"
    board.restore()
    assert shown(d)["trigger"] == "mmc0"


def _led_cli(tmp_path, config, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *(sys.executable, "-m", "medtls.cli", "led", "--config", str(config), "--once"),
            *("--leds-dir", str(tmp_path / "leds"), *extra),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_daemon_down_blinks_fast(tmp_path):
    d = fake_leds(tmp_path, name="led0")  # the older kernels' name, second in led.names
    (tmp_path / "device.crt").write_text("(a certificate)")
    config = tmp_path / "medtls.yaml"
    config.write_text(
        f"identity: {{certificate: device.crt}}\ncontrol: {{socket: {tmp_path / 'no.sock'}}}\n"
    )
    r = _led_cli(tmp_path, config)
    assert r.returncode == 0, r.stderr
    assert shown(d)["trigger"] == "timer"
    assert (shown(d)["delay_on"], shown(d)["delay_off"]) == ("100", "100")
    assert "led led0: fail_closed (blink 100 ms on / 100 ms off): medtls not running" in r.stderr


def test_healthy_daemon_lights_the_led_steadily(tmp_path, box_factory):
    box = box_factory()
    d = fake_leds(tmp_path)
    r = _led_cli(tmp_path, box.config_path)
    assert r.returncode == 0, r.stderr
    assert shown(d)["trigger"] == "none" and shown(d)["brightness"] == "255", r.stderr
    assert "led ACT: healthy (steady on): serving" in r.stderr


def test_unsynchronised_clock_blinks_short_flashes(tmp_path, box_factory):
    box = box_factory(extra={"clock": {"require_sync": True, "not_before": "2100-01-01"}})
    d = fake_leds(tmp_path)
    r = _led_cli(tmp_path, box.config_path)
    assert r.returncode == 0, r.stderr
    assert (shown(d)["delay_on"], shown(d)["delay_off"]) == ("200", "1800"), r.stderr


def test_board_without_the_led_says_so_once_and_ends(tmp_path):
    (tmp_path / "leds").mkdir()
    config = tmp_path / "medtls.yaml"
    config.write_text("led: {names: [ACT, PWR]}\n")
    r = _led_cli(tmp_path, config)
    assert r.returncode == 0
    assert r.stderr.count("no LED ACT or PWR in") == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_disabled_led_is_left_alone(tmp_path):
    d = fake_leds(tmp_path)
    config = tmp_path / "medtls.yaml"
    config.write_text("led: {enabled: false}\n")
    r = _led_cli(tmp_path, config)
    assert r.returncode == 0
    assert shown(d)["trigger"].startswith("none [mmc0]")
