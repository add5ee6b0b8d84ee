"""The `rauc` command line, and the other facts of the running system the gate reads."""

from __future__ import annotations

import subprocess

from medtls.core.update import RaucFacts, clip, parse_rauc_status

KEYRING = "/etc/rauc/keyring.pem"
BOOT_ID = "/proc/sys/kernel/random/boot_id"


class RaucError(Exception):
    """A rauc command failed; the message says which and why."""


def run(args: list[str], conf: str | None = None, timeout: float = 60) -> str:
    cmd = ["rauc", *([f"--conf={conf}"] if conf else []), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise RaucError("rauc is not installed") from None
    except subprocess.TimeoutExpired:
        raise RaucError(f"`rauc {' '.join(args)}` did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace")
        # rauc prints "rauc-Message: ..." chatter on stderr before the error itself.
        lines = [ln for ln in err.splitlines() if ln.strip() and "rauc-Message" not in ln]
        raise RaucError(clip("; ".join(lines[-3:]) or f"exit status {proc.returncode}"))
    return proc.stdout.decode("utf-8", "replace")


def status(conf: str | None = None) -> RaucFacts:
    out = run(["status", "--detailed", "--output-format=json"], conf)
    return parse_rauc_status(out.encode("utf-8"))


def boot_id(path: str = BOOT_ID) -> str:
    with open(path, encoding="ascii") as f:
        return f.read(100).strip()
