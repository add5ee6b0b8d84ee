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

    def roots_pem(self) -> bytes:
        """The CA certificate pebble issues under (from its management interface)."""
        import ssl
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        mgmt = self.directory.replace(f":{self.port}/dir", f":{self.mgmt_port}/roots/0")
        with urllib.request.urlopen(mgmt, context=ctx, timeout=10) as r:
            return r.read()

    port: int = 0
    mgmt_port: int = 0


@contextlib.contextmanager
def running_pebble(work: Path, *, always_valid: bool = False, eab: dict | None = None):
    work.mkdir(parents=True, exist_ok=True)
    ca = CA(work / "listener-ca", "pebble listener test CA")
    cert, key = ca.issue("pebble", ips=["127.0.0.1"], dns=["localhost"], eku=("server",))
    port, mgmt, http_port, tls_port = (free_port() for _ in range(4))
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
            [PEBBLE, "-config", str(cfg_file), "-dnsserver", "127.0.0.1:1"],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pebble did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        peb = Pebble(
            f"https://127.0.0.1:{port}/dir", ca.path, http_port, tls_port, proc, log, port, mgmt
        )
        yield peb
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
