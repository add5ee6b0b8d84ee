from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from pki import PKI

MEDTLS = [sys.executable, "-m", "medtls.cli"]


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def fresh_pki(tmp_path) -> PKI:
    """A PKI of this test alone, for leaves it issues, rotates or revokes."""
    return PKI(tmp_path / "pki")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, session=None):
    """A TLS handshake between two SSLObjects over memory BIOs; returns (server, client).

    What the server sends after the handshake (a TLS 1.3 ticket) waits in the client's BIO."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    cli = client_ctx.wrap_bio(c_in, c_out, server_side=False, session=session)
    for _ in range(10):
        for obj in (cli, srv):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    return srv, cli


def echo_once(sock: socket.socket, payload: bytes) -> bytes:
    """Send `payload`; read until as many bytes came back or the peer closed."""
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> int:
    """SIGTERM (after SIGCONT: a test may have stopped it); SIGKILL after `timeout` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


_SOCKETS = itertools.count()


def control_socket(cn: str) -> str:
    """A control socket of this box alone: a second `medtls run` refuses to start while
    another daemon answers on its control.socket (and tests run side by side)."""
    return os.path.join(tempfile.gettempdir(), f"medtls-{os.getpid()}-{next(_SOCKETS)}-{cn}.sock")


def box_config(pki: PKI, cn: str, **over) -> dict:
    cfg = {
        "device": {"ip": "127.0.0.1"},
        "mode": "explicit",
        "identity": {"certificate": str(pki.crt(cn)), "key": str(pki.key(cn))},
        "trust": {"ca": str(pki.ca)},
        "limits": {"handshake_timeout": 10, "connect_timeout": 5, "drain_timeout": 2},
        "logging": {"level": "info"},
        "clock": {"require_sync": False},
        "metrics": {"enabled": False},
        "audit": {"transport": "none"},
        "control": {"socket": control_socket(cn)},
    }
    cfg.update(over)
    return cfg


class Medtls:
    """A `medtls run` subprocess (the one harness of the tests; tests/ops/harness.py's Box is
    one with ops wired up); `log()` returns its stderr so far. `env` adds to os.environ."""

    def __init__(
        self, config: Path, logfile: Path, env: dict[str, str] | None = None, preexec_fn=None
    ):
        self.config = config
        self.logfile = logfile
        self._fh = open(logfile, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*MEDTLS, "run", "--config", str(config)],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=preexec_fn,
        )

    def wait_ready(self, ports: list[int], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"medtls exited {self.proc.returncode}:\n{self.log()}")
            text = self.log()
            if all(f":{p}\n" in text for p in ports) and "listening" in text:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"medtls not listening on {ports}:\n{text}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in log:\n{self.log()}")

    def conn_lines(self) -> list[str]:
        return [x for x in self.log().splitlines() if "event=connection " in x]

    def wait_conn(self, result: str, *parts: str, timeout: float = 10) -> str:
        """The first one-per-connection log line with `result=<result>` and every part in it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.conn_lines():
                if f" result={result} " in line and all(p in line for p in parts):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no connection line result={result} {parts}:\n{self.log()}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        stop_process(self.proc, timeout)
        self._fh.close()
        return self.proc.returncode


@pytest.fixture
def run_medtls(tmp_path):
    procs: list[Medtls] = []

    def start(
        cfg: dict, name: str = "medtls", ready: list[int] | None = None, preexec_fn=None
    ) -> Medtls:
        path = write_yaml(tmp_path / f"{name}.yaml", cfg)
        m = Medtls(path, tmp_path / f"{name}.log", preexec_fn=preexec_fn)
        procs.append(m)
        m.wait_ready(ready or [])
        return m

    yield start
    for m in procs:
        m.stop()


class Pair:
    """plain client -> A (outbound, TLS client) -> B (inbound, TLS server) -> plain server."""

    def __init__(self, a: Medtls, b: Medtls, a_port: int, b_port: int, server_port: int):
        self.a, self.b = a, b
        self.a_port, self.b_port, self.server_port = a_port, b_port, server_port


@pytest.fixture
def make_pair(pki, run_medtls):
    def make(
        server_port: int,
        a_over: dict | None = None,
        b_over: dict | None = None,
        a_cn: str = "box-a",
        b_cn: str = "box-b",
        verify: dict | None = None,
        allow: list | None = None,
        preexec_fn=None,  # e.g. dicom_util.LoopbackNetns.enter: both boxes in that namespace
    ) -> Pair:
        a_port, b_port = free_port(), free_port()
        a_cfg = box_config(
            pki,
            a_cn,
            outbound=[
                {
                    "name": "far",
                    "address": "127.0.0.1",
                    "tls_port": b_port,
                    "listen": f"127.0.0.1:{a_port}",
                    "verify": verify or {"cn": "box-b"},
                }
            ],
        )
        b_cfg = box_config(
            pki,
            b_cn,
            inbound=[
                {
                    "name": "svc",
                    "listen": f"127.0.0.1:{b_port}",
                    "device_port": server_port,
                    "allow": allow or [{"cn": "box-a"}],
                }
            ],
        )
        for cfg, over in ((a_cfg, a_over), (b_cfg, b_over)):
            for k, v in (over or {}).items():
                if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                    cfg[k] = {**cfg[k], **v}
                else:
                    cfg[k] = v
        b = run_medtls(b_cfg, "b", [b_port], preexec_fn)
        a = run_medtls(a_cfg, "a", [a_port], preexec_fn)
        return Pair(a, b, a_port, b_port, server_port)

    return make


class EchoServer:
    """Threaded plain TCP server: echoes, or sinks and reports what it received."""

    def __init__(self, mode: str = "echo"):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.mode = mode
        self.received: list[bytes] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, c: socket.socket):
        data = []
        with c:
            try:
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    if self.mode == "echo":
                        c.sendall(b)
                    else:
                        data.append(b)
                if self.mode == "echo":
                    c.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        with self.lock:
            self.received.append(b"".join(data))

    def close(self):
        self.sock.close()


@pytest.fixture
def echo_server():
    s = EchoServer("echo")
    yield s
    s.close()
