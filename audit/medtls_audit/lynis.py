"""Lynis report parsing, the committed baseline, and running Lynis inside a container.

The appliance Molecule container has no route to a Debian mirror, so Debian's lynis package is
taken from the controller (apt cache or `apt-get download`) and unpacked into the container with
`dpkg-deb -x` (lynis is shell scripts; installing it with dpkg would need e2fsprogs, absent from the
slim image, and a forced install makes Lynis's own `apt-get check` test fail).
"""

from __future__ import annotations

import glob
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

GOAL = 85
REMOTE_DIR = "/root/medtls-lynis"  # not /tmp: systemd mounts a tmpfs over it
LYNIS_CMD = (
    f"lynis audit system --cronjob --logfile {REMOTE_DIR}/lynis.log "
    f"--report-file {REMOTE_DIR}/lynis-report.dat"
)


@dataclass
class Report:
    index: int
    warnings: dict[str, str] = field(default_factory=dict)  # test id -> text
    suggestions: list[tuple[str, str]] = field(default_factory=list)
    tests_done: int = 0
    version: str = "?"
    host: str = "?"
    date: str = "?"


@dataclass
class Baseline:
    index: int
    warnings: set[str]


def parse_report(text: str) -> Report:
    """Parse lynis-report.dat (key=value, list entries as key[]=ID|text|...)."""
    rep = Report(index=-1)
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "hardening_index":
            rep.index = int(value)
        elif key == "lynis_tests_done":
            rep.tests_done = int(value)
        elif key == "lynis_version":
            rep.version = value
        elif key == "hostname":
            rep.host = value
        elif key == "report_datetime_start":
            rep.date = value
        elif key in ("warning[]", "suggestion[]"):
            test_id, _, rest = value.partition("|")
            text_ = rest.split("|")[0]
            if key == "warning[]":
                rep.warnings[test_id] = text_
            else:
                rep.suggestions.append((test_id, text_))
    if rep.index < 0:
        raise ValueError("no hardening_index in the Lynis report")
    return rep


def parse_baseline(text: str) -> Baseline:
    """`hardening_index: N` and `warning: TEST-ID text` lines; # starts a comment."""
    index, warnings = None, set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition(":")
        if key == "hardening_index":
            index = int(value)
        elif key == "warning":
            warnings.add(value.split()[0])
        elif key != "goal":
            raise ValueError(f"lynis baseline line {n}: unknown key {key!r}")
    if index is None:
        raise ValueError("lynis baseline: no hardening_index line")
    return Baseline(index, warnings)


def render_baseline(rep: Report, note: str) -> str:
    lines = [f"# {line}" for line in note.splitlines()]
    lines += [f"hardening_index: {rep.index}", f"goal: {GOAL}"]
    lines += [f"warning: {tid} {text}" for tid, text in sorted(rep.warnings.items())]
    return "\n".join(lines) + "\n"


def regressions(rep: Report, base: Baseline) -> list[str]:
    bad = []
    if rep.index < base.index:
        bad.append(f"hardening index {rep.index} < baseline {base.index}")
    bad += [
        f"new warning {tid}: {rep.warnings[tid]}"
        for tid in sorted(set(rep.warnings) - base.warnings)
    ]
    return bad


def find_deb(cache: Path) -> Path:
    """Debian's lynis .deb from the apt cache, else downloaded into `cache` with apt-get."""
    for pattern in ("/var/cache/apt/archives/lynis_*_all.deb", str(cache / "lynis_*_all.deb")):
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[-1])
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "lynis"], cwd=cache, check=True, capture_output=True)
    return Path(sorted(glob.glob(str(cache / "lynis_*_all.deb")))[-1])


def copy_into_container(deb: Path, container: str) -> None:
    subprocess.run(["docker", "exec", container, "mkdir", "-p", REMOTE_DIR], check=True)
    subprocess.run(["docker", "cp", str(deb), f"{container}:{REMOTE_DIR}/lynis.deb"], check=True)


# CRYP-7902 would run openssl on every file of the CA bundle (half of the run time); the box's own
# certificates are under /etc/medtls.
CUSTOM_PROFILE = "ssl-certificate-paths=/etc/medtls:/etc/ssl/private"
UNPACK_CMD = (
    f"dpkg-deb -x {REMOTE_DIR}/lynis.deb / && "
    f"echo '{CUSTOM_PROFILE}' > /etc/lynis/custom.prf && lynis --version"
)


def top_suggestions(rep: Report, n: int = 10) -> list[str]:
    return [f"{tid} {text}" for tid, text in rep.suggestions[:n]]
