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
    details: dict[str, list[str]] = field(default_factory=dict)  # test id -> suggestion details
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
            fields = rest.split("|")
            text_ = fields[0]
            if key == "warning[]":
                rep.warnings[test_id] = text_
            else:
                rep.suggestions.append((test_id, text_))
                rep.details.setdefault(test_id, []).append(fields[1] if len(fields) > 1 else "-")
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


# Suggestions the hardening role closed (roles/hardening, docs/security.md): each may not come
# back. An entry with details closes only suggestions whose details start with one of them.
CLOSED: dict[str, tuple[str, ...]] = {
    "AUTH-9230": (),  # password hashing rounds (login.defs)
    "AUTH-9262": (),  # PAM password strength (libpam-passwdqc)
    "AUTH-9286": (),  # password aging (login.defs)
    "AUTH-9328": (),  # umask 027
    "BANN-7126": (),  # /etc/issue banner
    "BANN-7130": (),  # /etc/issue.net banner
    "DEB-0280": (),  # libpam-tmpdir
    "DEB-0811": (),  # apt-listchanges
    "DEB-0831": (),  # needrestart
    "DEB-0880": (),  # fail2ban
    "PKGS-7370": (),  # debsums
    "USB-1000": (),  # usb-storage blocked
    "STRG-1846": (),  # firewire blocked
    "SSH-7408": (
        "MaxSessions",
        "TCPKeepAlive",
        "AllowAgentForwarding",
        "X11Forwarding",
        "MaxAuthTries",
        "ClientAlive",
        "LogLevel",
    ),
    "SHLL-6220": (),  # idle shell timeout
    "KRNL-5820": (),  # core dumps
    "ACCT-9622": (),  # process accounting
    "FINT-4350": (),  # file integrity tool (AIDE)
    "FINT-4402": (),  # AIDE checksums
    "FILE-7524": (),  # file permissions (sshd_config, cron)
}


def reopened(rep: Report) -> list[str]:
    """Suggestions of CLOSED that are back in the report."""
    back = []
    for tid, prefixes in CLOSED.items():
        for detail in rep.details.get(tid, []):
            if not prefixes or detail.startswith(prefixes):
                back.append(f"{tid} {detail}".rstrip(" -"))
    return back


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
# --keep-directory-symlink: the package ships /lib/systemd/system/lynis.*; a plain `dpkg-deb -x`
# replaces the merged-/usr symlink /lib with a directory and breaks the system being audited.
UNPACK_CMD = (
    f"dpkg-deb --fsys-tarfile {REMOTE_DIR}/lynis.deb | tar -x --keep-directory-symlink -C / && "
    f"echo '{CUSTOM_PROFILE}' > /etc/lynis/custom.prf && lynis --version"
)


def top_suggestions(rep: Report, n: int = 10) -> list[str]:
    return [f"{tid} {text}" for tid, text in rep.suggestions[:n]]
