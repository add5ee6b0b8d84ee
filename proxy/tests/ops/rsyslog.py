"""A real RFC 5425 receiver: rsyslogd (imtcp + gnutls) on loopback, writing what it parsed."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from conftest import free_port, stop_process

FIELD_SEP = "\x1f"
TEMPLATE_FIELDS = (
    "pri",
    "protocol-version",
    "hostname",
    "app-name",
    "procid",
    "msgid",
    "structured-data",
    "msg",
)


def available() -> bool:
    return shutil.which("rsyslogd") is not None and any(
        Path(d, "lmnsd_gtls.so").exists()
        for d in (
            "/usr/lib/x86_64-linux-gnu/rsyslog",
            "/usr/lib/aarch64-linux-gnu/rsyslog",
            "/usr/lib/rsyslog",
        )
    )


class Rsyslog:
    def __init__(
        self,
        workdir: Path,
        ca: Path,
        cert: Path,
        key: Path,
        port: int | None = None,
        auth_mode: str = "x509/certvalid",
    ):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.out = self.dir / "received.log"
        self.proc: subprocess.Popen | None = None
        template = FIELD_SEP.join(f"%{f}%" for f in TEMPLATE_FIELDS)
        (self.dir / "rsyslog.conf").write_text(
            f"""
global(workDirectory="{self.dir}"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.AuthMode="{auth_mode}")
input(type="imtcp" address="127.0.0.1" port="{self.port}")
template(name="fields" type="string" string="{template}\\n")
action(type="omfile" file="{self.out}" template="fields" flushOnTXEnd="on"
       asyncWriting="off")
"""
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "rsyslogd",
                "-n",
                "-f",
                str(self.dir / "rsyslog.conf"),
                "-i",
                str(self.dir / "rsyslogd.pid"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "rsyslogd.err", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {(self.dir / 'rsyslogd.err').read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("rsyslogd did not listen within 10 s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5)
        self.proc = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / "rsyslogd.pid")

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text(encoding="utf-8").splitlines():
            parts = line.split(FIELD_SEP)
            if len(parts) == len(TEMPLATE_FIELDS):
                rec = dict(zip(TEMPLATE_FIELDS, parts, strict=True))
                rec["msg"] = rec["msg"].lstrip("\ufeff").lstrip()
                out.append(rec)
        return out

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = self.records()
            if len(recs) >= count:
                return recs
            time.sleep(0.05)
        return self.records()
