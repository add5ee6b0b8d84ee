"""Answers the CA's validation connections while an order runs: tls-alpn-01 (RFC 8737) and
http-01 (RFC 8555 §8.3), for IP identifiers as RFC 8738 says.

In transparent mode the listeners are IP_TRANSPARENT sockets on the device's address: the
nftables rules of the validation window (interception.validation_window) deliver the CA's
connections for the device IP:443/80 to them. Every validation connection may be hostile: each
is served in its own thread with a deadline and a bounded read, and whatever one does ends
that connection only, never the order.

tls-alpn-01: only a ClientHello whose ALPN list is exactly ["acme-tls/1"] gets the challenge
certificate (read with MSG_PEEK before the handshake), for the SNI of an expected identifier
(an IP's reverse-DNS name, RFC 8738 §6); a fresh context per connection and no tickets, so
nothing resumes; the connection is closed right after the handshake.
http-01: one GET of /.well-known/acme-challenge/<expected token>; everything else is a 404.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import select
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path

from medtls.core import tlshello

ACME_TLS_1 = b"acme-tls/1"
ALPN_EXTENSION = 16
ACME_IDENTIFIER_OID = "1.3.6.1.5.5.7.1.31"  # id-pe-acmeIdentifier (RFC 8737 §6.1)
CHALLENGE_PATH = "/.well-known/acme-challenge/"
MAX_HTTP_REQUEST = 8192  # request line + headers of a validation GET fit in far less
CONNECTION_TIMEOUT = 5.0  # seconds a validation connection may take in total
MAX_CONNECTIONS = 16  # concurrent validation connections; more are closed at once
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75


class ResponderError(Exception):
    pass


# ---------------------------------------------------------------- pure: http-01


class BadRequest(ValueError):
    pass


def request_head(buffer: bytes) -> bytes | None:
    """The request head (up to and excluding the blank line) once complete; None while more
    may come; BadRequest when it cannot be complete within MAX_HTTP_REQUEST bytes."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HTTP_REQUEST)
    if end >= 0:
        return buffer[:end]
    if len(buffer) >= MAX_HTTP_REQUEST:
        raise BadRequest(f"request head longer than {MAX_HTTP_REQUEST} bytes")
    return None


def parse_request_line(head: bytes) -> tuple[str, str]:
    """(method, target) of an HTTP/1.x request head; BadRequest for anything else."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3:
        raise BadRequest("request line is not METHOD TARGET VERSION")
    method, target, version = parts
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise BadRequest("not HTTP/1.0 or HTTP/1.1")
    if not method.isalpha() or not method.isupper() or len(method) > 16:
        raise BadRequest("bad method")
    if not target or any(c <= 0x20 or c >= 0x7F for c in target):
        raise BadRequest("bad request target")
    return method.decode("ascii"), target.decode("ascii")


def http01_status(head: bytes, tokens: dict[str, str]) -> tuple[int, bytes]:
    """(status, body) the responder answers a complete request head with: 200 and the key
    authorization for GET of an expected token, 400 for what is not HTTP, 404 otherwise."""
    try:
        method, target = parse_request_line(head)
    except BadRequest:
        return 400, b""
    if method != "GET" or not target.startswith(CHALLENGE_PATH):
        return 404, b""
    token = target[len(CHALLENGE_PATH) :]
    if not token or not set(token) <= TOKEN_CHARS or token not in tokens:
        return 404, b""
    return 200, tokens[token].encode("ascii")


REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found"}


def http_response(status: int, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# ---------------------------------------------------------------- pure: tls-alpn-01


def client_hello_alpn(stream: bytes) -> tuple[bytes, ...] | None:
    """The ALPN protocol names a ClientHello at the start of `stream` offers (empty without
    the extension); None while it is incomplete; tlshello.NotTls for anything malformed."""
    hs = b"".join(tlshello.handshake_records(stream))[: tlshello.MAX_HELLO_BYTES]
    if len(hs) < 4:
        return None
    if hs[0] != tlshello.CLIENT_HELLO:
        raise tlshello.NotTls("first handshake message is not a ClientHello")
    length = int.from_bytes(hs[1:4], "big")
    if length > tlshello.MAX_HELLO_BYTES - 4:
        raise tlshello.NotTls("ClientHello too long")
    if len(hs) < 4 + length:
        return None
    body = hs[4 : 4 + length]
    try:
        return _alpn_of(body)
    except IndexError:
        raise tlshello.NotTls("malformed ClientHello") from None


def _take(body: bytes, pos: int, size: int) -> tuple[bytes, int]:
    if pos + size > len(body):
        raise IndexError
    return body[pos : pos + size], pos + size


def _vector(body: bytes, pos: int, len_bytes: int) -> tuple[bytes, int]:
    raw, pos = _take(body, pos, len_bytes)
    return _take(body, pos, int.from_bytes(raw, "big"))


def _alpn_of(body: bytes) -> tuple[bytes, ...]:
    pos = 2 + 32  # legacy_version, random
    _, pos = _take(body, 0, pos)
    _, pos = _vector(body, pos, 1)  # legacy_session_id
    _, pos = _vector(body, pos, 2)  # cipher_suites
    _, pos = _vector(body, pos, 1)  # legacy_compression_methods
    if pos == len(body):
        return ()
    exts, _ = _vector(body, pos, 2)
    epos, found = 0, None
    while epos < len(exts):
        etype, epos = _take(exts, epos, 2)
        data, epos = _vector(exts, epos, 2)
        if int.from_bytes(etype, "big") == ALPN_EXTENSION:
            if found is not None:
                raise tlshello.NotTls("ALPN extension twice")
            found = data
    if found is None:
        return ()
    names_raw, rest = _vector(found, 0, 2)
    if rest != len(found):
        raise tlshello.NotTls("trailing bytes after the ALPN list")
    names, npos = [], 0
    while npos < len(names_raw):
        name, npos = _vector(names_raw, npos, 1)
        if not name:
            raise tlshello.NotTls("empty ALPN protocol name")
        names.append(name)
    return tuple(names)


def sni_name(ident_type: str, value: str) -> str:
    """The server name a validator sends for an identifier: a DNS name as it is, an IP as
    its reverse-DNS name (RFC 8738 §6)."""
    if ident_type == "ip":
        return ipaddress.ip_address(value).reverse_pointer
    return value.lower().rstrip(".")


def alpn_challenge_cert(ident_type: str, value: str, key_auth: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of the self-signed tls-alpn-01 certificate: the identifier
    as its only SAN and the critical acmeIdentifier extension with SHA-256(key authorization)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_auth.encode("ascii")).digest()
    san = (
        x509.IPAddress(ipaddress.ip_address(value))
        if ident_type == "ip"
        else x509.DNSName(value.rstrip("."))
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-tls-alpn-01")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-tls-alpn-01")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(ACME_IDENTIFIER_OID), b"\x04\x20" + digest
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


# ---------------------------------------------------------------- the responder


def _listener(bind: tuple[str, int], transparent: bool) -> socket.socket:
    host, port = bind
    fam = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if transparent:
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            else:
                s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        s.bind((host, port))
        s.listen(64)
    except OSError as e:
        s.close()
        raise ResponderError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return s


class ChallengeResponder:
    """Context manager serving tls-alpn-01 on `tls_bind` and http-01 on `http_bind` (either may
    be None: that challenge type is then not served) while an order runs."""

    def __init__(
        self,
        tls_bind: tuple[str, int] | None,
        http_bind: tuple[str, int] | None,
        transparent: bool = False,
        timeout: float = CONNECTION_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ):
        self.tls_bind, self.http_bind, self.transparent = tls_bind, http_bind, transparent
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._tokens: dict[str, str] = {}
        self._alpn: dict[str, tuple[str, str]] = {}  # SNI -> (cert file, key file)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listeners: list[socket.socket] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.tls_address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        self.answered = {"tls-alpn-01": 0, "http-01": 0}
        self.refused = 0

    # -- what obtain() calls

    def serves(self, challenge_type: str) -> bool:
        if challenge_type == "tls-alpn-01":
            return self.tls_bind is not None
        if challenge_type == "http-01":
            return self.http_bind is not None
        return False

    def expect(
        self, challenge_type: str, ident_type: str, ident_value: str, token: str, key_auth: str
    ) -> None:
        if challenge_type == "http-01":
            with self._lock:
                self._tokens[token] = key_auth
        elif challenge_type == "tls-alpn-01":
            cert, key = alpn_challenge_cert(ident_type, ident_value, key_auth)
            assert self._tmp is not None, "expect() outside the responder's context"
            base = Path(self._tmp.name) / hashlib.sha256(token.encode()).hexdigest()[:16]
            cert_file, key_file = base.with_suffix(".crt"), base.with_suffix(".key")
            for path, data in ((cert_file, cert), (key_file, key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            with self._lock:
                self._alpn[sni_name(ident_type, ident_value)] = (str(cert_file), str(key_file))
        else:
            raise ValueError(f"challenge type {challenge_type!r} is not served")

    # -- lifecycle

    def __enter__(self) -> ChallengeResponder:
        self._tmp = tempfile.TemporaryDirectory(prefix="medtls-acme-")
        try:
            if self.tls_bind is not None:
                s = _listener(self.tls_bind, self.transparent)
                self._listeners.append(s)
                self.tls_address = s.getsockname()[:2]
                self._spawn(self._accept_loop, s, self._serve_tls)
            if self.http_bind is not None:
                s = _listener(self.http_bind, self.transparent)
                self._listeners.append(s)
                self.http_address = s.getsockname()[:2]
                self._spawn(self._accept_loop, s, self._serve_http)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 1)
        for s in self._listeners:
            s.close()
        self._listeners.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _spawn(self, target, *args) -> threading.Thread:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _accept_loop(self, listener: socket.socket, serve) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([listener], [], [], 0.1)
            if not ready:
                continue
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            if not self._slots.acquire(blocking=False):
                self.refused += 1
                conn.close()
                continue
            threading.Thread(target=self._serve_one, args=(conn, serve), daemon=True).start()

    def _serve_one(self, conn: socket.socket, serve) -> None:
        try:
            serve(conn, time.monotonic() + self.timeout)
        except (OSError, ValueError, ssl.SSLError, tlshello.NotTls, BadRequest):
            self.refused += 1
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()

    def _remaining(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("validation connection took too long")
        return left

    # -- http-01

    def _serve_http(self, conn: socket.socket, deadline: float) -> None:
        buffer = b""
        head = None
        while head is None:
            conn.settimeout(self._remaining(deadline))
            chunk = conn.recv(4096)
            if not chunk:
                return
            buffer += chunk
            head = request_head(buffer)
        with self._lock:
            tokens = dict(self._tokens)
        status, body = http01_status(head, tokens)
        conn.settimeout(self._remaining(deadline))
        conn.sendall(http_response(status, body))
        if status == 200:
            self.answered["http-01"] += 1
        else:
            self.refused += 1

    # -- tls-alpn-01

    def _serve_tls(self, conn: socket.socket, deadline: float) -> None:
        alpn = None
        while alpn is None:
            conn.settimeout(self._remaining(deadline))
            peeked = conn.recv(tlshello.MAX_HELLO_BYTES, socket.MSG_PEEK)
            alpn = client_hello_alpn(peeked)
            if alpn is None:
                if len(peeked) >= tlshello.MAX_HELLO_BYTES:
                    raise tlshello.NotTls("ClientHello too long")
                # MSG_PEEK returns at once while data waits: give the peer time to send more.
                time.sleep(0.01)
        if alpn != (ACME_TLS_1,):
            self.refused += 1
            return
        with self._lock:
            certs = dict(self._alpn)
        chosen: list[str] = []

        def pick(sock, server_name, _ctx):
            files = certs.get((server_name or "").lower().rstrip("."))
            if files is None:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            sock.context = _challenge_context(*files)
            chosen.append(server_name)
            return None

        base = _challenge_context(None, None)
        base.sni_callback = pick
        conn.settimeout(self._remaining(deadline))
        tls = base.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
            if chosen and tls.selected_alpn_protocol() == ACME_TLS_1.decode():
                self.answered["tls-alpn-01"] += 1
        finally:
            tls.close()


def _challenge_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """A context for one validation connection (fresh each time: no session cache to resume
    from; no tickets)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    ctx.set_alpn_protocols([ACME_TLS_1.decode()])
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx
