"""Serve a Registry (/metrics) and the health verdict (/healthz) on a local or management
address with stdlib http.server in a daemon thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .control import SHUTDOWN_POLL
from .metrics import CONTENT_TYPE, Registry

HEALTHZ_OK = ("OK", "WARNING")  # a WARNING box still serves: 200; CRITICAL or broken: 503


def _handler(registry: Registry, health: Callable[[], dict] | None):
    class Handler(BaseHTTPRequestHandler):
        server_version = "medtls-metrics"
        timeout = 10  # a stalled scraper must not pin a thread forever
        sys_version = ""

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/healthz" and health is not None:
                self._healthz()
                return
            if path not in ("/metrics", "/"):
                self.send_error(404, "only /metrics and /healthz here")
                return
            self._send(200, CONTENT_TYPE, registry.render().encode())

        def _healthz(self):
            import json  # not in a serving process that is never asked (performance.md 43)

            try:
                verdict = health()
            except Exception as exc:  # a broken status is an unhealthy box, not a dead server
                problem = {"level": "UNKNOWN", "problem": str(exc)}
                verdict = {"health": "UNKNOWN", "reasons": [problem]}
            code = 200 if verdict.get("health") in HEALTHZ_OK else 503
            body = json.dumps(verdict, sort_keys=True).encode() + b"\n"
            self._send(code, "application/json", body)

        def _send(self, code: int, content_type: str, body: bytes):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass

    return Handler


class MetricsServer:
    def __init__(
        self, registry: Registry, host: str, port: int, health: Callable[[], dict] | None = None
    ):
        server_cls = ThreadingHTTPServer
        if ":" in host:

            class V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_cls = V6
        self.httpd = server_cls((host, port), _handler(registry, health))
        self.address = self.httpd.server_address[:2]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            args=(SHUTDOWN_POLL,),
            name="medtls-metrics",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
