"""`medtls console`: the status screen on the box's console (HDMI tty1, serial) before login.

agetty opens and sets up the terminal and runs this as its login program (`agetty -n -l`);
it redraws the daemon's status every few seconds and, when Enter is pressed, execs the real
login program on the same terminal. `screen` is a plain function of the status dict.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable

from . import boxstate, health

CLEAR = "\033[H\033[2J"
PROMPT = "Press Enter to log in."
STATE_TITLES = {
    boxstate.HEALTHY: "HEALTHY",
    boxstate.WARNING: "WARNING",
    boxstate.CLOCK_UNSYNCED: "CLOCK NOT SYNCHRONISED",
    boxstate.NO_CERTIFICATE: "NO CERTIFICATE",
    boxstate.FAIL_CLOSED: "FAIL CLOSED",
}


def screen(
    status: dict | None,
    error: str = "",
    now: float | None = None,
    hostname: str = "",
    certificate_present: bool | None = True,
    rows: int = 24,
    cols: int = 80,
) -> str:
    """The whole screen: a headline (state, traffic), `medtls status`'s text, the prompt; cut to
    rows x cols, keeping the first lines and the problems when something must go."""
    now = time.time() if now is None else now
    state, reason = boxstate.classify(status, error, certificate_present, now)
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(now))
    head = [
        f"medtls box {hostname}  {stamp}".rstrip(),
        f"state:     {STATE_TITLES[state]}: {reason}",
        f"traffic:   {boxstate.traffic(status, state)}",
        "",
    ]
    if status is None:
        body = [f"medtls not running: {error}"]
    else:
        body = health.render(status, now).splitlines()
    tail = ["", PROMPT]
    room = max(1, rows - len(head) - len(tail))
    if len(body) > room:
        body = _fit(body, room)
    return "\n".join(line[:cols] for line in head + body + tail) + "\n"


def _fit(body: list[str], room: int) -> list[str]:
    """Keep the first line and the problems (at the end), drop from the middle."""
    try:
        problems_at = body.index("problems:")
    except ValueError:
        problems_at = len(body)
    keep_end = body[problems_at:][: max(0, room - 2)]
    keep_start = body[: max(1, room - 1 - len(keep_end))]
    dropped = len(body) - len(keep_start) - len(keep_end)
    return [*keep_start, f"... {dropped} more lines: medtls status", *keep_end][:room]


def run(
    fd: int,
    write: Callable[[str], None],
    fetch: Callable[[], tuple[dict | None, str]],
    login: list[str],
    interval: float = 5.0,
    hostname: str = "",
    certificate_present: Callable[[], bool | None] = lambda: True,
    size: Callable[[], tuple[int, int]] = lambda: (24, 80),
) -> int:
    """Redraw until Enter arrives on `fd`, then exec `login`. Returns only at end of input
    (the terminal hung up): agetty's unit starts the next one."""
    while True:
        status, error = fetch()
        rows, cols = size()
        write(
            CLEAR + screen(status, error, time.time(), hostname, certificate_present(), rows, cols)
        )
        readable, _, _ = select.select([fd], [], [], interval)
        if not readable:
            continue
        data = os.read(fd, 1024)
        if not data:
            return 0
        if b"\n" in data or b"\r" in data:
            write(CLEAR)
            os.execv(login[0], login)  # noqa: S606 - the login program replaces us on the tty


def fetcher(socket_path: str, timeout: float = 3.0) -> Callable[[], tuple[dict | None, str]]:
    from . import control

    def fetch() -> tuple[dict | None, str]:
        try:
            reply = control.request(socket_path, "status", timeout=timeout)
        except control.ControlError as exc:
            return None, str(exc)
        if not reply.get("ok", False):
            return None, f"daemon answered: {reply.get('error')}"
        return reply, ""

    return fetch


def terminal_size(fd: int) -> tuple[int, int]:
    with contextlib.suppress(OSError):
        size = os.get_terminal_size(fd)
        if size.lines >= 10 and size.columns >= 40:
            return size.lines, size.columns
    return 24, 80  # a serial line reports 0x0
