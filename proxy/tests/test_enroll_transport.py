"""enroll.transport.session_as on a real kernel: the HTTP server sees the device IP as source."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns_util import box_and_lan

PROXY = str(Path(__file__).resolve().parents[1])
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs Debian's python3"),
]

RECORDING_SERVER = r"""
import http.server, sys
host, port, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer((host, port), H)
open(ready, "w").close()
srv.timeout = 1
for _ in range(60):
    srv.handle_request()
"""

CLIENT = r"""
import sys
from medtls.enroll.transport import session_as
device = sys.argv[1] or None
s = session_as(device, None, 5)
for _ in range(2):  # two requests: a kept-alive connection and the pool both speak as the device
    r = s.get(sys.argv[2])
    print(r.text)
s.close()
s = session_as(device, None, 5)
print(s.get(sys.argv[2], headers={"Connection": "close"}).text)
"""


def test_session_as_device_speaks_with_the_device_ip(tmp_path):
    (tmp_path / "server.py").write_text(RECORDING_SERVER)
    (tmp_path / "client.py").write_text(CLIENT)
    with box_and_lan("mtet") as net:
        ready = tmp_path / "ready"
        server = net.popen(net.lan, sys.executable, str(tmp_path / "server.py"), net.lan_ip,
                           "8080", str(ready), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while not ready.exists():
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.05)
            url = f"http://{net.lan_ip}:8080/x"
            env = {**os.environ, "PYTHONPATH": PROXY}
            transparent = net.run(net.box, SYSTEM_PYTHON, str(tmp_path / "client.py"),
                                  net.device_ip, url, env=env)  # fmt: skip
            assert transparent.returncode == 0, transparent.stderr
            assert transparent.stdout.split() == [net.device_ip] * 3
            explicit = net.run(net.box, SYSTEM_PYTHON, str(tmp_path / "client.py"), "", url,
                               env=env)  # fmt: skip
            assert explicit.returncode == 0, explicit.stderr
            assert explicit.stdout.split() == [net.box_ip] * 3
        finally:
            server.kill()
            server.wait(5)


def test_session_as_never_uses_an_environment_proxy(monkeypatch):
    pytest.importorskip("requests")
    from medtls.enroll.transport import session_as

    monkeypatch.setenv("http_proxy", "http://192.0.2.1:9")
    session = session_as(None, None, 1)
    assert session.trust_env is False
    assert session.verify is True
    assert session_as(None, "/etc/ca.pem", 1).verify == "/etc/ca.pem"
