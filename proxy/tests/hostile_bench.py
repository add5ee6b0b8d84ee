"""Two running boxes and a hostile TLS server on loopback, for presenting hostile certificates.

    plain client -> A "far"  (outbound) -> B "svc" (inbound) -> echo server
    plain client -> A "evil" (outbound) -> HostileServer (presents the certificate under test)
    hostile TLS client (presents the certificate under test) -> B "svc"

Rules that make the identity parser run to the end: B allows `cn: evil` with an `spki_sha256`
pin of the hostile certificates' key (the old daemon read the whole DER only for a pin), A's
"evil" route verifies `cn: evil` plus the pin, and A's "evil2" route verifies `cn: evil` alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
import time
from pathlib import Path

import hostile
from conftest import EchoServer, Medtls, box_config, echo_once, free_port, stop_process, write_yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def spki_sha256(key) -> str:
    return hashlib.sha256(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).hexdigest()


class HostileServer:
    """A TLS server presenting whatever chain `serve(chain, key)` set last; counts handshakes
    it completed (so a refusal is known to be the box's, after OpenSSL accepted)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.ctx: ssl.SSLContext | None = None
        self.handshakes = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def serve(self, chain: Path, key: Path) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, key)
        self.ctx = ctx

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c, self.ctx), daemon=True).start()

    def _handle(self, raw: socket.socket, ctx: ssl.SSLContext):
        raw.settimeout(10)
        with contextlib.suppress(OSError), ctx.wrap_socket(raw, server_side=True) as s:
            with self.lock:
                self.handshakes += 1
            while data := s.recv(65536):
                s.sendall(data)
            s.unwrap()  # close_notify: a bare close would be a truncation
        raw.close()

    def close(self):
        self.sock.close()


class Bench:
    def __init__(self, pki, tmp: Path):
        self.pki, self.tmp = pki, tmp
        self.issuer = pki.inter
        self.keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
        self.pins = [spki_sha256(k) for k in self.keys]
        self.key_files = [hostile.write_key(tmp / f"hk{i}.key", k) for i, k in enumerate(self.keys)]
        self.echo = EchoServer("echo")
        self.server = HostileServer()
        self.a_far, self.a_evil, self.a_evil2, self.b_port = (free_port() for _ in range(4))
        evil = {"address": "127.0.0.1", "tls_port": self.server.port}
        a_cfg = box_config(
            pki, "box-a",
            outbound=[
                {"name": "far", "address": "127.0.0.1", "tls_port": self.b_port,
                 "listen": f"127.0.0.1:{self.a_far}", "verify": {"cn": "box-b"}},
                {"name": "evil", **evil, "listen": f"127.0.0.1:{self.a_evil}",
                 "verify": {"cn": "evil", "spki_sha256": self.pins[0]}},
                {"name": "evil2", **evil, "listen": f"127.0.0.1:{self.a_evil2}",
                 "verify": {"cn": "evil"}},
            ],
        )  # fmt: skip
        b_cfg = box_config(
            pki, "box-b",
            inbound=[
                {"name": "svc", "listen": f"127.0.0.1:{self.b_port}",
                 "device_port": self.echo.port,
                 "allow": [{"cn": "box-a"}, {"cn": "evil", "spki_sha256": self.pins[0]},
                           {"dns": "ris.test"}]},
            ],
        )  # fmt: skip
        self.b = Medtls(write_yaml(tmp / "b.yaml", b_cfg), tmp / "b.log")
        self.b.wait_ready([self.b_port])
        self.a = Medtls(write_yaml(tmp / "a.yaml", a_cfg), tmp / "a.log")
        self.a.wait_ready([self.a_far, self.a_evil, self.a_evil2])
        self._n = 0

    def close(self):
        for m in (self.a, self.b):
            stop_process(m.proc)
            m._fh.close()
        self.echo.close()
        self.server.close()

    def alive(self) -> bool:
        return self.a.proc.poll() is None and self.b.proc.poll() is None

    def files(self, der: bytes, key_index: int = 0) -> tuple[Path, Path]:
        self._n += 1
        chain = hostile.write_chain(self.tmp / f"h{self._n % 8}.crt", der, self.issuer)
        return chain, self.key_files[key_index]

    # -- the hostile peer, both ways

    def present_inbound(self, der: bytes, key_index: int = 0) -> tuple[bool, int]:
        """A TLS client presents `der` to B: (its own handshake completed, its port)."""
        chain, key = self.files(der, key_index)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.pki.ca)
        ctx.load_cert_chain(chain, key)
        with _bound_socket() as raw:
            port = raw.getsockname()[1]
            try:
                raw.connect(("127.0.0.1", self.b_port))
                with ctx.wrap_socket(raw) as s:
                    with contextlib.suppress(OSError):
                        s.sendall(b"x")
                        s.recv(10)
                    return True, port
            except (ssl.SSLError, OSError):
                return False, port

    def present_outbound(
        self, der: bytes, route: str = "evil", key_index: int = 0
    ) -> tuple[bytes, int]:
        """A's device dials the `route` listener; the hostile server presents `der`: (what came
        back to the device for b"x", b"" when refused; the device's port)."""
        self.server.serve(*self.files(der, key_index))
        port = self.a_evil if route == "evil" else self.a_evil2
        with _bound_socket() as s:
            try:  # the box may reset the device before connect() even returns
                s.connect(("127.0.0.1", port))
                return echo_once(s, b"x"), s.getsockname()[1]
            except OSError:
                return b"", s.getsockname()[1]

    # -- good connections

    def good_inbound(self, payload: bytes = b"hello") -> bytes:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.pki.ca)
        ctx.load_cert_chain(self.pki.crt("box-a"), self.pki.key("box-a"))
        with (
            socket.create_connection(("127.0.0.1", self.b_port), timeout=10) as raw,
            ctx.wrap_socket(raw) as s,
        ):
            return echo_once(s, payload)

    def good_outbound(self, payload: bytes = b"hello") -> bytes:
        with socket.create_connection(("127.0.0.1", self.a_far), timeout=10) as s:
            return echo_once(s, payload)


def _bound_socket() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # the port is known even when connect() fails
    s.settimeout(10)
    return s


def conn_line(m: Medtls, client_port: int, timeout: float = 10) -> str:
    """The connection line of the connection from 127.0.0.1:`client_port`."""
    needle = f" client=127.0.0.1:{client_port} "
    deadline = time.monotonic() + timeout
    while True:
        for line in m.conn_lines():
            if needle in line:
                return line
        if m.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no new connection line (exit {m.proc.poll()}):\n{m.log()}")
        time.sleep(0.02)
