"""Real peers in the lab namespaces: DCMTK storescp/storescu and a plain TCP probe."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from vmlab import ns

# pynetdicom installs its own storescu/storescp into the venv, which is first on PATH.
STORESCP = "/usr/bin/storescp"
STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"

PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.sendall(b"PLAINTEXT-PROBE\\r\\n")
    print("connected")
except OSError as e:
    print(f"refused: {e}")
"""

LISTENER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
while True:
    c, peer = s.accept()
    print(f"accepted {peer[0]}", flush=True)
    c.close()
"""


def start_storescp_tls(netns: str, pki: Path, out: Path, port: int) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        STORESCP, "+tls", str(pki / "pacs.key"), str(pki / "pacs.crt"),
        "+cf", str(pki / "ca.pem"), "-rc", "+py", "-aet", "PACS", "-od", str(out), str(port),
    ]  # fmt: skip
    proc = subprocess.Popen(ns(netns, cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    return proc


def start_listener(netns: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ns(netns, ["python3", "-c", LISTENER, str(port)]),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "listening"
    return proc


def storescu(netns: str, host: str, port: int, dcm: Path) -> subprocess.CompletedProcess:
    timeouts = ["-to", "20", "-ta", "20", "-td", "20"]
    cmd = [STORESCU, *timeouts, "-aec", "PACS", host, str(port), str(dcm)]
    return subprocess.run(ns(netns, cmd), capture_output=True, text=True, timeout=90)


def probe(netns: str, host: str, port: int, timeout: float = 5) -> str:
    cmd = ["python3", "-c", PROBE, host, str(port), str(timeout)]
    return subprocess.run(ns(netns, cmd), capture_output=True, text=True, timeout=30).stdout.strip()


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


def ping(netns: str, host: str, count: int = 3) -> bool:
    cmd = ["ping", "-n", "-q", "-c", str(count), "-W", "3", host]
    return subprocess.run(ns(netns, cmd), capture_output=True, timeout=60).returncode == 0
