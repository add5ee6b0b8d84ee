"""Debian's pebble (ACME test CA) on loopback for the enrollment tests: its HTTPS listener
certificate from the project's test PKI, External Account Binding required, no random
validation delay. Only ever bound to 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from medtls_testpki import CA

PEBBLE = "/usr/bin/pebble"
EAB_KID = "kid-1"
EAB_HMAC = base64.urlsafe_b64encode(b"medtls test EAB hmac key 32bytes").rstrip(b"=").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Pebble:
    directory: str
    ca_file: Path  # trust anchor of pebble's HTTPS listener
    http_port: int  # where its validator connects for http-01
    tls_port: int  # ... and for tls-alpn-01
    proc: subprocess.Popen
    log: Path

    port: int = 0
    mgmt_port: int = 0
    netns: str | None = None

    def root_pem(self) -> bytes:
        """The root pebble issues under (from its management interface)."""
        code = (
            "import ssl, sys, urllib.request\n"
            f"ctx = ssl.create_default_context(cafile={str(self.ca_file)!r})\n"
            f"url = 'https://127.0.0.1:{self.mgmt_port}/roots/0'\n"
            "sys.stdout.buffer.write(urllib.request.urlopen(url, context=ctx, timeout=10).read())"
        )
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return subprocess.run(
            [*prefix, "/usr/bin/python3", "-c", code], capture_output=True, check=True, timeout=30
        ).stdout


def _listening(prefix: list[str], port: int) -> bool:
    if not prefix:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False
    probe = f"exec 3<>/dev/tcp/127.0.0.1/{port}"
    return subprocess.run([*prefix, "bash", "-c", probe], capture_output=True).returncode == 0


@contextlib.contextmanager
def running_pebble(
    work: Path,
    *,
    always_valid: bool = False,
    eab: dict | None = None,
    netns: str | None = None,
):
    """pebble on 127.0.0.1 at free ports; inside `netns` (a namespace of the test alone) at
    fixed ones, its validator dialling 80/443 as for a real device address."""
    work.mkdir(parents=True, exist_ok=True)
    ca = CA(work / "listener-ca", "pebble listener test CA")
    cert, key = ca.issue("pebble", ips=["127.0.0.1"], dns=["localhost"], eku=("server",))
    if netns:
        port, mgmt, http_port, tls_port = 14000, 15000, 80, 443
    else:
        port, mgmt, http_port, tls_port = (free_port() for _ in range(4))
    prefix = ["ip", "netns", "exec", netns] if netns else []
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{mgmt}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": True,
            "externalAccountMACKeys": eab if eab is not None else {EAB_KID: EAB_HMAC},
        }
    }
    cfg_file = work / "pebble.json"
    cfg_file.write_text(json.dumps(config))
    env = {
        "PATH": "/usr/bin:/bin",
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }
    if always_valid:
        env["PEBBLE_VA_ALWAYS_VALID"] = "1"
    log = work / "pebble.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [*prefix, PEBBLE, "-config", str(cfg_file), "-dnsserver", "127.0.0.1:1"],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            if _listening(prefix, port):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pebble did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        peb = Pebble(
            f"https://127.0.0.1:{port}/dir", ca.path, http_port, tls_port, proc, log, port, mgmt,
            netns,
        )  # fmt: skip
        yield peb
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
