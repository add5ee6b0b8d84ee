"""The small JSON state files one command writes and `medtls status` reads (enrollment, CRL
fetch, updates): written atomically, read with a size cap. Their parsers stay with their owners
and are strict: a file may have been edited, damaged, or left half-written by an older version."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def read_capped(
    path: str | os.PathLike, max_bytes: int, error: type[Exception] = OSError
) -> bytes | None:
    """At most `max_bytes` + 1 bytes of the file (more than `max_bytes` means too large), None
    when it does not exist; `error` naming the file for any other failure."""
    try:
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None


def write_atomic(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    """`text` into `path`, creating its directory: a temporary file in the same directory,
    fsync, rename, fsync of the directory, so a reader (or a power cut) sees the old or the new
    file, never part of one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
