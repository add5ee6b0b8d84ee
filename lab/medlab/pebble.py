"""Debian's pebble as the hospital's ACME CA, inside the lab's LAN (never on a host address).

Its own namespace PREFIXca, cabled to Mallory's `wire` like the PACS, holds one address,
198.18.0.40, so every validation connection comes from there. External Account Binding is
required (one key id, a fresh random HMAC key), validation is real (no always-valid switch;
PEBBLE_VA_NOSLEEP only removes the random delay) and goes to ports 80/443 of the identifier, i.e.
through the box to the device's address. Authorisations are never reused, so every order is
validated again. Pebble's HTTPS certificate comes from the lab PKI; its issuing root is new at
every start (fetched from the management interface).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from medlab.net import NAMESPACES, Lab, LabError
from medlab.pki import issue

CA_IP = "198.18.0.40"
ACME_PORT, MANAGEMENT_PORT = 14000, 15000
EAB_KID = "box-kid-1"
PEBBLE = "/usr/bin/pebble"
NS = "ca"
VALIDITY = 86400  # seconds: short-lived certificates, as the box is meant to get


@dataclass
class Pebble:
    lab: Lab
    workdir: Path
    proc: subprocess.Popen | None = None
    eab_hmac: str = ""
    roots: Path = Path()

    @property
    def directory(self) -> str:
        return f"https://{CA_IP}:{ACME_PORT}/dir"

    @property
    def log(self) -> str:
        return self.lab.log("pebble.log")

    def eab_file(self, path: Path) -> Path:
        """The HMAC key as medtls wants it: one base64url line, mode 0600."""
        path.write_text(self.eab_hmac + "\n")
        path.chmod(0o600)
        return path

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        env = {
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
        }
        self.proc = self.lab.spawn(
            NS, [PEBBLE, "-config", str(self.workdir / "pebble.json")], "pebble.log", env=env
        )
        self.lab.wait_listen(NS, ACME_PORT, proc=self.proc, log="pebble.log")
        self.lab.wait_listen(NS, MANAGEMENT_PORT, proc=self.proc, log="pebble.log")
        self.roots.write_text(self._fetch("/roots/0") + self._fetch("/intermediates/0"))

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc)
            self.proc = None

    def _fetch(self, path: str) -> str:
        url = f"https://{CA_IP}:{MANAGEMENT_PORT}{path}"
        r = self.lab.run(NS, ["curl", "-sS", "--fail", "--max-time", "10", "--cacert",
                              str(self.workdir / "ca.crt"), url])  # fmt: skip
        if "BEGIN CERTIFICATE" not in r.stdout:
            raise LabError(f"pebble {path}: no certificate: {r.stdout[:200]}")
        return r.stdout


def add_namespace(lab: Lab) -> None:
    """PREFIXca with eth0 198.18.0.40/24 on Mallory's wire (removed by remove_namespace)."""
    ns, mal = lab.ns(NS), lab.ns("mallory")
    steps = [
        ["ip", "netns", "add", ns],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "-n", mal, "link", "add", NS, "type", "veth", "peer", "name", "eth0", "netns", ns],
        ["ip", "-n", mal, "link", "set", NS, "master", "wire", "up"],
        ["ip", "-n", ns, "addr", "add", f"{CA_IP}/24", "dev", "eth0"],
        ["ip", "-n", ns, "link", "set", "eth0", "up"],
    ]
    for argv in steps:
        subprocess.run(argv, check=True, capture_output=True, timeout=10)
    forget_neighbour(lab, CA_IP)


def forget_neighbour(lab: Lab, ip: str) -> None:
    """Drop cached ARP entries for `ip` in every lab namespace: an address that moved (e.g. from
    the pacs namespace to PREFIXca) must not be sent to its old owner."""
    for name in NAMESPACES:
        subprocess.run(["ip", "-n", lab.ns(name), "neigh", "flush", "to", ip], check=False,
                       capture_output=True, timeout=10)  # fmt: skip


def remove_namespace(lab: Lab) -> None:
    for pid in subprocess.run(["ip", "netns", "pids", lab.ns(NS)], capture_output=True,
                              text=True, check=False).stdout.split():  # fmt: skip
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", lab.ns(NS)], capture_output=True, check=False)
    subprocess.run(["ip", "-n", lab.ns("mallory"), "link", "del", NS], capture_output=True,
                   check=False)  # fmt: skip


def setup(lab: Lab, pki: Path, workdir: Path) -> Pebble:
    """Namespace, configuration and a running pebble; the caller stops it and calls
    remove_namespace (also on failure)."""
    workdir.mkdir(parents=True, exist_ok=True)
    add_namespace(lab)
    cert, key = issue(pki, "pebble", "pebble", ips=(CA_IP,), eku=("server",))
    (workdir / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    hmac = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    config = {
        "pebble": {
            "listenAddress": f"{CA_IP}:{ACME_PORT}",
            "managementListenAddress": f"{CA_IP}:{MANAGEMENT_PORT}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": True,
            "certificateValidityPeriod": VALIDITY,
            "externalAccountMACKeys": {EAB_KID: hmac},
        }
    }
    (workdir / "pebble.json").write_text(json.dumps(config, indent=2))
    peb = Pebble(lab, workdir, eab_hmac=hmac, roots=workdir / "pebble-roots.pem")
    peb.start()
    return peb
