"""Audit messages that outlive the daemon: what was still queued at stop is written to a spool
file and sent first by the next start.

The file is a sequence of RFC 5425 octet-counted frames (`MSG-LEN SP SYSLOG-MSG`), the same
bytes that go on the wire, so a spooled message keeps its original timestamp.
"""

from __future__ import annotations

import contextlib
import os

from .syslog import frame

# Far above any real audit message, far below a size that could exhaust memory on a bad file.
MAX_MESSAGE = 1 << 20


def encode(messages: list[bytes]) -> bytes:
    return b"".join(frame(m) for m in messages)


def decode(data: bytes) -> tuple[list[bytes], int | None]:
    """(messages, offset of the first damaged byte or None) — a damaged tail is not guessed at."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos, pos + 8)
        digits = data[pos:sp] if sp > pos else b""
        if not digits.isdigit() or digits.startswith(b"0"):
            return out, pos
        n = int(digits)
        end = sp + 1 + n
        if n > MAX_MESSAGE or end > len(data):
            return out, pos
        out.append(data[sp + 1 : end])
        pos = end
    return out, None


def save(path: str, messages: list[bytes]) -> None:
    """Replace `path` atomically (readable by the daemon's user only); OSError on failure."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode(messages))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_dir(path)


def take(path: str) -> tuple[list[bytes], str]:
    """Read and remove the spool: (messages, problem or ""). A missing file is no problem.

    A damaged file gives what precedes the damage; the file itself is kept as `path.damaged`
    for inspection instead of being read again at every start.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], ""
    except OSError as e:
        return [], f"cannot read {path}: {e.strerror or e}"
    messages, bad = decode(data)
    problem = ""
    try:
        if bad is None:
            os.unlink(path)
        else:
            os.replace(path, f"{path}.damaged")
            problem = (
                f"{path}: damaged at byte {bad} of {len(data)} after {len(messages)} messages; "
                f"kept as {path}.damaged"
            )
    except OSError as e:
        # Sending these again at every start would duplicate them in the repository.
        return [], f"cannot remove {path} after reading it: {e.strerror or e}"
    _sync_dir(path)
    return messages, problem


def default_path(environ: dict[str, str]) -> str:
    """Under systemd (StateDirectory=) the spool lives in the state directory; else none."""
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return os.path.join(state, "audit.spool") if state.startswith("/") else ""


def layout(base: str, worker: tuple[int, int] | None):
    """(this process's spool, a function listing the spools it adopts) for `worker` =
    (index, count) or None (one process). The adopted ones are read before its own, so
    older messages go first."""
    if not base:
        return "", list
    index, count = worker if worker is not None else (0, 1)
    own = base if worker is None else f"{base}.{index}"

    def adopt() -> list[str]:
        if index != 0:
            return []
        mine = {own} | {f"{base}.{i}" for i in range(count) if worker is not None}
        found = [base] if os.path.exists(base) else []
        with contextlib.suppress(OSError):
            prefix = os.path.basename(base) + "."
            for name in sorted(os.listdir(os.path.dirname(base) or ".")):
                rest = name[len(prefix) :] if name.startswith(prefix) else ""
                if rest.isdigit():
                    found.append(os.path.join(os.path.dirname(base), name))
        return [p for p in found if p not in mine]

    return own, adopt


def _sync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
