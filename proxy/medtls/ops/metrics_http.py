"""Serve a Registry on a local address with stdlib http.server in a daemon thread."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .control import SHUTDOWN_POLL
from .metrics import CONTENT_TYPE, Registry


def _handler(registry: Registry):
    class Handler(BaseHTTPRequestHandler):
        server_version = "medtls-metrics"
        timeout = 10  # a stalled scraper must not pin a thread forever
        sys_version = ""

        def do_GET(self):
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics here")
                return
            body = registry.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass

    return Handler


class MetricsServer:
    def __init__(self, registry: Registry, host: str, port: int):
        server_cls = ThreadingHTTPServer
        if ":" in host:

            class V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_cls = V6
        self.httpd = server_cls((host, port), _handler(registry))
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
