"""CRLs with numbers and chosen dates, and a loopback HTTP server that serves them (tests of
`medtls crl-fetch`)."""

from __future__ import annotations

import datetime as dt
import http.server
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding


def make_crl(issuer, revoked=(), number: int | None = 1, this: float = -60, nxt: float = 86400,
             key=None, delta: bool = False) -> bytes:  # fmt: skip
    """DER CRL of `issuer` (testpki Issued) revoking `revoked` (certificates); `this`/`nxt`
    seconds from now; signed by `key` (default the issuer's: another key is a forgery)."""
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(now + dt.timedelta(seconds=this))
        .next_update(now + dt.timedelta(seconds=nxt))
    )
    if number is not None:
        b = b.add_extension(x509.CRLNumber(number), critical=False)
    if delta:
        b = b.add_extension(x509.DeltaCRLIndicator(max(0, (number or 1) - 1)), critical=True)
    for cert in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now + dt.timedelta(seconds=this))
            .build()
        )
    return b.sign(key or issuer.key, hashes.SHA256()).public_bytes(Encoding.DER)


def pem(*ders: bytes) -> bytes:
    crls = [x509.load_der_x509_crl(d).public_bytes(Encoding.PEM) for d in ders]
    return b"".join(crls)


class CrlServer:
    """HTTP on (host, port): `files[path] = bytes`; `lie[path] = n` announces n more bytes than
    it sends (a truncated transfer)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.files: dict[str, bytes] = {}
        self.lie: dict[str, int] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body) + outer.lie.get(self.path, 0)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
