"""Security checks run on every contender before it is measured: the numbers only count if the
pair really does TLS 1.3 with the chosen suite, requires a client certificate and verifies the
server. Each check raises CheckFailed with a one-line reason."""

import re
import socket
import ssl
import subprocess
import threading

from .certs import SERVER_NAME, Pki

ALL_SUITES = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"


class CheckFailed(RuntimeError):
    pass


def negotiated(tls_port: int, pki: Pki) -> tuple[str, str]:
    """(protocol, suite) the server side picks when the client offers every TLS 1.3 suite,
    AES-128 first: a server not pinned to the configured suite would pick another one."""
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{tls_port}", "-brief",
         "-cert", str(pki.client_crt), "-key", str(pki.client_key), "-CAfile", str(pki.ca),
         "-verify_return_error", "-verify_hostname", SERVER_NAME, "-ciphersuites", ALL_SUITES],
        input=b"", capture_output=True, timeout=15,
    )  # fmt: skip
    text = out.stderr.decode(errors="replace") + out.stdout.decode(errors="replace")
    proto = re.search(r"Protocol version: (\S+)", text)
    suite = re.search(r"Ciphersuite: (\S+)", text)
    if not proto or not suite:
        line = text.strip().splitlines()[-1:] or ["no output"]
        raise CheckFailed(f"TLS handshake with 127.0.0.1:{tls_port} failed: {line[0]}")
    return proto.group(1), suite.group(1)


def rejects_anonymous_client(tls_port: int, pki: Pki) -> None:
    """A client without a certificate must not get data through the server side."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"Eanonymous")
                data = s.recv(64)
        except (OSError, ssl.SSLError):
            return
    if data:
        raise CheckFailed(f"server side on port {tls_port} relayed data for a client without cert")


class _RogueServer:
    """TLS server with a certificate from an untrusted CA; records any application data."""

    def __init__(self, pki: Pki):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.rogue_crt, pki.rogue_key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as s:
                    self.received += s.recv(64)
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self) -> None:
        self.done.set()
        self.sock.close()
        self.thread.join(2)


def refuses_rogue_server(contender, setup, listen: int) -> None:
    """The client side must not send data to a server whose certificate it cannot verify."""
    rogue = _RogueServer(setup.pki)
    side = None
    try:
        side = contender.start_client(setup, listen, rogue.port, tag="rogue-client")
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as s:
            try:
                s.sendall(b"Eto-the-rogue")
                s.recv(64)
            except OSError:
                pass
    finally:
        if side:
            side.stop()
        rogue.close()
    if rogue.received:
        raise CheckFailed(f"client side sent data to an unverified server: {rogue.received!r}")


def run_all(contender, setup, tls_port: int, spare_port: int) -> dict:
    proto, suite = negotiated(tls_port, setup.pki)
    if proto != "TLSv1.3" or suite != setup.suite:
        raise CheckFailed(f"negotiated {proto} {suite}, expected TLSv1.3 {setup.suite}")
    rejects_anonymous_client(tls_port, setup.pki)
    refuses_rogue_server(contender, setup, spare_port)
    return {
        "protocol": proto,
        "suite": suite,
        "client_cert_required": True,
        "server_verified": True,
    }
