"""`medtls led`: the board LED shows the box's state (`boxstate.classify`) as a blink pattern.

A small process of its own polls the control socket, so the serving daemon stays lean and
needs no access to /sys. Patterns use the kernel's `timer` trigger (delay_on/delay_off in ms),
so the LED blinks without this process waking up; steady on is trigger `none` + brightness.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import boxstate

log = logging.getLogger("medtls.led")


@dataclass(frozen=True)
class Pattern:
    trigger: str  # "none" (steady, brightness) or "timer" (delay_on/delay_off)
    on: bool = True
    delay_on: int = 0
    delay_off: int = 0

    def describe(self) -> str:
        if self.trigger == "none":
            return "steady on" if self.on else "off"
        return f"blink {self.delay_on} ms on / {self.delay_off} ms off"


PATTERNS = {
    boxstate.HEALTHY: Pattern("none", on=True),
    boxstate.WARNING: Pattern("timer", delay_on=1000, delay_off=1000),
    boxstate.CLOCK_UNSYNCED: Pattern("timer", delay_on=200, delay_off=1800),
    boxstate.NO_CERTIFICATE: Pattern("timer", delay_on=1800, delay_off=200),
    boxstate.FAIL_CLOSED: Pattern("timer", delay_on=100, delay_off=100),
}


def pattern_for(state: str) -> Pattern:
    return PATTERNS[state]


def find(leds_dir: str | Path, names: tuple[str, ...] | list[str]) -> Path | None:
    """The first of `names` present under `leds_dir` (/sys/class/leds), or None."""
    for name in names:
        path = Path(leds_dir) / name
        if (path / "trigger").exists():
            return path
    return None


def current_trigger(text: str) -> str:
    """The selected trigger of a sysfs `trigger` file: 'none [mmc0] timer' -> 'mmc0'."""
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return text.strip()


class Led:
    """Writes patterns into one LED's sysfs directory; only when the pattern changes (writing
    the trigger restarts the blink)."""

    def __init__(self, path: Path):
        self.path = path
        self.shown: Pattern | None = None
        self.original = current_trigger(self._read("trigger"))

    def _read(self, name: str) -> str:
        try:
            return (self.path / name).read_text()
        except OSError:
            return ""

    def _write(self, name: str, value: str) -> None:
        with open(self.path / name, "w") as fh:
            fh.write(value)

    def show(self, pattern: Pattern) -> None:
        if pattern == self.shown:
            return
        self._write("trigger", pattern.trigger)
        if pattern.trigger == "timer":
            # the kernel creates delay_on/delay_off when the timer trigger is selected
            self._write("delay_on", str(pattern.delay_on))
            self._write("delay_off", str(pattern.delay_off))
        else:
            top = self._read("max_brightness").strip() or "1"
            self._write("brightness", top if pattern.on else "0")
        self.shown = pattern

    def restore(self) -> None:
        if self.original:
            with contextlib.suppress(OSError):
                self._write("trigger", self.original)


def run(
    led: Led,
    fetch: Callable[[], tuple[dict | None, str]],
    certificate_present: Callable[[], bool | None],
    interval: float = 2.0,
    once: bool = False,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    last_state = None
    while True:
        status, error = fetch()
        state, reason = boxstate.classify(status, error, certificate_present())
        try:
            led.show(pattern_for(state))
        except OSError as exc:
            log.error("led %s: cannot write: %s; LED patterns off", led.path, exc.strerror or exc)
            return 1
        if state != last_state:
            log.info(
                "led %s: %s (%s): %s", led.path.name, state, PATTERNS[state].describe(), reason
            )
            last_state = state
        if once:
            return 0
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline:
            if stop():
                return 0
            time.sleep(min(0.2, interval))


def identity_present(config_path: str) -> bool | None:
    """Whether the configured identity certificate exists; None if the file does not say.
    Read without validating (the LED and console must work with a broken configuration)."""
    try:
        import yaml

        with open(config_path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
        cert = raw["identity"]["certificate"]
    except Exception:  # no or a broken configuration: the daemon's own state tells
        return None
    if not isinstance(cert, str):
        return None
    return os.path.exists(os.path.join(os.path.dirname(os.path.abspath(config_path)), cert))
