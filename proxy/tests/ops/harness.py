"""Drive a real medtls daemon process with ops: notify socket, TLS clients, CLI, scrapes."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import yaml
from conftest import Medtls, free_port


class NotifySocket:
    """Plays systemd's side of sd_notify: collects datagrams with their arrival time."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def texts(self) -> list[str]:
        return [m for _, m in self.messages]

    def wait_for(self, needle: str, timeout: float = 10.0, after: int = 0) -> int:
        """Index of the first message at or after `after` that contains `needle`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, (_, text) in enumerate(self.messages[after:], after):
                if needle in text.split("\n") or needle in text:
                    return i
            time.sleep(0.02)
        raise AssertionError(f"no notify message {needle!r}; got {self.texts()}")

    def close(self):
        self._stop = True
        self.sock.close()


class Box(Medtls):
    """One `medtls run` with ops wired up: inbound TLS -> echo server, a notify socket playing
    systemd, metrics, the control socket."""

    def __init__(
        self,
        tmp: Path,
        pki,
        echo_port: int,
        audit_port: int | None = None,
        extra: dict | None = None,
        watchdog_usec: int | None = None,
    ):
        self.tmp = tmp
        self.pki = pki
        self.port = free_port()
        self.metrics_port = free_port()
        self.control = str(tmp / "control.sock")
        self.synced = tmp / "synchronized"
        self.synced.write_text("")
        self.cert, self.key = pki.issue("box", cn="box-v1", ips=("127.0.0.1",))
        self.client_cert, self.client_key = pki.issue("pacs", cn="pacs")
        cfg = {
            "device": {"ip": "127.0.0.1"},
            "mode": "explicit",
            "identity": {"certificate": str(self.cert), "key": str(self.key)},
            "trust": {"ca": str(pki.ca)},
            "inbound": [
                {
                    "name": "svc",
                    "listen": f"127.0.0.1:{self.port}",
                    "device_port": echo_port,
                    "allow": [{"cn": "pacs"}],
                }
            ],
            "limits": {"handshake_timeout": 3, "connect_timeout": 3, "drain_timeout": 3},
            "logging": {"level": "info"},
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
            "clock": {"require_sync": True, "sync_file": str(self.synced)},
            "control": {"socket": self.control, "watch_files": False},
            "audit": {"transport": "none"},
        }
        if audit_port:
            cfg["audit"] = {
                "transport": "tls",
                "host": "127.0.0.1",
                "port": audit_port,
                "ca": str(pki.ca),
                "certificate": str(self.cert),
                "key": str(self.key),
                "retry_interval": 0.2,
                "source_id": "box-under-test",
            }
        for key, value in (extra or {}).items():
            cfg[key] = value
        self.config_path = tmp / "medtls.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.notify = NotifySocket(tmp / "notify.sock")
        env = {"NOTIFY_SOCKET": self.notify.path}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        super().__init__(self.config_path, tmp / "medtls.log", env)
        try:
            self.notify.wait_for("READY=1", timeout=15)
        except AssertionError:
            self.stop()
            raise AssertionError(f"no READY=1; log:\n{self.log()}") from None

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.pki.ca))
        ctx.check_hostname = False
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx

    def connect(self, ctx: ssl.SSLContext | None = None, timeout: float = 5) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return (ctx or self.client_context()).wrap_socket(raw)

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "medtls.cli", *args, "--socket", self.control],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def status_json(self) -> tuple[int, dict]:
        r = self.cli("status", "--json")
        return r.returncode, json.loads(r.stdout) if r.stdout else {}

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return resp.read().decode()

    def stop(self, timeout: float = 15) -> int:
        rc = super().stop(timeout)
        self.notify.close()
        return rc


def close_cleanly(sock: ssl.SSLSocket) -> bytes:
    """Half-close our side (close_notify) and read until the box closes: b'' if all echoed."""
    rest = b""
    try:
        raw = sock.unwrap()
        raw.shutdown(socket.SHUT_WR)
        while chunk := raw.recv(65536):
            rest += chunk
        raw.close()
    except (OSError, ssl.SSLError) as exc:
        raise AssertionError(f"connection not closed cleanly: {exc!r}") from None
    return rest


def wait_until(predicate, timeout=5.0, what="condition"):
    """The predicate's first truthy value; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
