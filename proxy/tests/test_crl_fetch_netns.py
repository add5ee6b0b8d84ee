"""`medtls crl-fetch` for real: the CRL comes from an HTTP server in a LAN namespace, the daemon
runs in the box namespace, peers handshake from the LAN. A newly revoked peer is refused after the
next fetch; a forged, stale, truncated or oversized CRL does not replace the good one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import box_config, stop_process, write_yaml
from crl_util import make_crl, pem
from netns_util import box_and_lan

PROXY = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs Debian's python3"),
]

ECHO = r"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
def serve(c):
    with c:
        c.settimeout(10)
        while data := c.recv(65536):
            c.sendall(data)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

CLIENT = r"""
import socket, ssl, sys
host, port, ca, crt, key = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
ctx.load_cert_chain(crt, key)
try:
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(b"hello")
            print(s.recv(100).decode() or "CLOSED")
except (OSError, ssl.SSLError) as e:
    print("REFUSED", e.__class__.__name__)
"""


def test_fetched_crl_revokes_and_bad_crls_never_replace_it(pki, tmp_path):
    (tmp_path / "echo.py").write_text(ECHO)
    (tmp_path / "client.py").write_text(CLIENT)
    www = tmp_path / "www"
    www.mkdir()
    crl = tmp_path / "crl.pem"
    crl.write_bytes(pem(make_crl(pki.inter, number=1), make_crl(pki.root, number=1)))
    env = {**os.environ, "PYTHONPATH": f"{PROXY}:{PROXY / 'testpki'}", "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen] = []
    with box_and_lan("mtcf") as net:
        try:
            url = f"http://{net.lan_ip}:8080"
            cfg = box_config(
                pki, "box-b", trust={"ca": str(pki.ca), "crl": str(crl)},
                inbound=[{"name": "svc", "listen": f"{net.box_ip}:2762", "device_port": 11104,
                          "allow": [{"cn": "box-a"}, {"cn": "ris"}]}],
                crl_fetch={"urls": [f"{url}/inter.crl", f"{url}/root.crl"], "timeout": 5,
                           "max_bytes": 8192, "state_file": str(tmp_path / "state.json")},
            )  # fmt: skip
            conf = write_yaml(tmp_path / "box.yaml", cfg)
            log = tmp_path / "box.log"

            def spawn(ns, *argv, out=subprocess.DEVNULL):
                p = net.popen(ns, *argv, stdout=out, stderr=subprocess.STDOUT, env=env)
                procs.append(p)
                return p

            spawn(net.lan, sys.executable, "-m", "http.server", "--bind", net.lan_ip,
                  "--directory", str(www), "8080")  # fmt: skip
            spawn(net.box, sys.executable, str(tmp_path / "echo.py"), "11104")
            with open(log, "wb") as fh:
                spawn(net.box, sys.executable, "-m", "medtls.cli", "run", "--config", str(conf),
                      out=fh)  # fmt: skip
            deadline = time.monotonic() + 20
            while "listening" not in log.read_text(errors="replace"):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)

            def peer(cn):
                r = net.run(net.lan, sys.executable, str(tmp_path / "client.py"), net.box_ip,
                            "2762", str(pki.ca), str(pki.crt(cn)), str(pki.key(cn)))  # fmt: skip
                return r.stdout.strip()

            def crl_fetch():
                return net.run(net.box, SYSTEM_PYTHON, "-m", "medtls.cli", "crl-fetch",
                               "--config", str(conf), env=env)  # fmt: skip

            def serve(inter: bytes, root: bytes | None = None):
                (www / "inter.crl").write_bytes(inter)
                if root is not None:
                    (www / "root.crl").write_bytes(root)

            assert peer("box-a") == "hello", log.read_text()
            # box-a is revoked: after the fetch its handshake is refused, ris is still served
            revoking = make_crl(pki.inter, [pki.leaves["box-a"].cert], number=2)
            serve(revoking, make_crl(pki.root, number=2))
            r = crl_fetch()
            assert r.returncode == 0, r.stdout + r.stderr
            assert "daemon: reloaded: generation 2" in r.stdout, r.stdout
            assert peer("box-a").startswith("REFUSED")
            assert "result=cert_revoked" in log.read_text()
            assert peer("ris") == "hello"
            status = net.run(net.box, sys.executable, "-m", "medtls.cli", "status", "--config",
                             str(conf), env=env)  # fmt: skip
            assert "crl fetch: last " in status.stdout and "2/2 URLs ok" in status.stdout, (
                status.stdout + status.stderr
            )
            good = crl.read_bytes()
            bad = {
                "forged": make_crl(pki.inter, number=3, key=pki.rogue.key),
                "stale": make_crl(pki.inter, number=3, this=-7200, nxt=-60),
                "truncated": make_crl(pki.inter, number=3)[:-30],
                "oversized": make_crl(pki.inter, number=3) + b"\0" * 9000,
            }
            for case, body in bad.items():
                serve(body)
                r = crl_fetch()
                assert r.returncode == 1, (case, r.stdout, r.stderr)
                assert crl.read_bytes() == good, case
                assert peer("box-a").startswith("REFUSED"), case
                assert peer("ris") == "hello", case
        finally:
            for p in procs:
                stop_process(p, 5)
