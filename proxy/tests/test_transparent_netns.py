"""Transparent mode for real: tproxy in a routed 'box' namespace between a device and a LAN.

dev (198.18.N.10) --veth-- box (tproxy -> medtls) --veth-- lan (198.19.N.20)
The interception helper's lab covers the full bridge; this proves the proxy's side of tproxy:
IP_TRANSPARENT listeners, original destination = getsockname(), spoofed upstream sources.
"""

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import box_config, write_yaml

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

SERVER = r"""
import socket, ssl, sys, threading
mode, host, port, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = None
if mode == "tls":
    ca, crt, key = sys.argv[5:8]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(crt, key)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen()
open(out + ".ready", "w").close()
while True:
    c, addr = s.accept()
    try:
        if ctx:
            c = ctx.wrap_socket(c, server_side=True)
        data = c.recv(1000)
        c.sendall(b"from %s:%s " % (addr[0].encode(), data))
        with open(out, "a") as f:
            f.write(addr[0] + "\n")
        if ctx:
            c.settimeout(10)
            c.unwrap()  # close_notify: without it the box reports result=truncated
    except Exception as e:
        with open(out, "a") as f:
            f.write("error " + repr(e) + "\n")
    finally:
        c.close()
"""

CLIENT = r"""
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=10)
if len(sys.argv) > 3:
    ca, crt, key = sys.argv[3:6]
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    ctx.load_cert_chain(crt, key)
    s = ctx.wrap_socket(s)
s.sendall(b"hello")
try:
    print(s.recv(1000).decode())
except ConnectionResetError:
    print("RESET")
if len(sys.argv) > 3:
    try:
        s.unwrap()  # close_notify: a clean end (without it the box reports result=truncated)
    except (OSError, ssl.SSLError):
        pass
"""


def sh(*cmds: str) -> None:
    for c in cmds:
        subprocess.run(c, shell=True, check=True, capture_output=True)


@pytest.fixture
def lab(tmp_path):
    n = random.randint(100, 250)
    tag = f"mt{os.getpid() % 10000}{n}"
    ns = {k: f"{tag}{k}" for k in ("dev", "box", "lan")}
    dev_ip, lan_ip = f"198.18.{n}.10", f"198.19.{n}.20"
    procs = []
    try:
        sh(*[f"ip netns add {v}" for v in ns.values()])
        sh(
            f"ip link add {tag}d type veth peer name {tag}bd",
            f"ip link add {tag}l type veth peer name {tag}bl",
            f"ip link set {tag}d netns {ns['dev']}",
            f"ip link set {tag}bd netns {ns['box']}",
            f"ip link set {tag}l netns {ns['lan']}",
            f"ip link set {tag}bl netns {ns['box']}",
        )
        d, b, la = (f"ip netns exec {ns[k]} " for k in ("dev", "box", "lan"))
        sh(
            d + f"ip addr add {dev_ip}/24 dev {tag}d", d + f"ip link set {tag}d up",
            d + "ip link set lo up", d + f"ip route add default via 198.18.{n}.1",
            la + f"ip addr add {lan_ip}/24 dev {tag}l", la + f"ip link set {tag}l up",
            la + "ip link set lo up", la + f"ip route add default via 198.19.{n}.1",
            b + f"ip addr add 198.18.{n}.1/24 dev {tag}bd", b + f"ip link set {tag}bd up",
            b + f"ip addr add 198.19.{n}.1/24 dev {tag}bl", b + f"ip link set {tag}bl up",
            b + "ip link set lo up", b + "sysctl -qw net.ipv4.ip_forward=1",
            b + "sysctl -qw net.ipv4.conf.all.rp_filter=0",
            b + "ip rule add fwmark 1 lookup 100",
            b + "ip route add local 0.0.0.0/0 dev lo table 100",
        )  # fmt: skip
        rules = tmp_path / "rules.nft"
        rules.write_text(f"""table inet medtls_test {{
  chain pre {{
    type filter hook prerouting priority mangle; policy accept;
    meta l4proto tcp socket transparent 1 meta mark set 1 accept
    iifname "{tag}bd" meta l4proto tcp tproxy ip to :15001 meta mark set 1 accept
    iifname "{tag}bl" ip daddr {dev_ip} tcp dport 2762 tproxy ip to :15002 meta mark set 1 accept
  }}
}}
""")
        sh(b + f"nft -f {rules}")

        def spawn(nsname, *args, log):
            with open(log, "wb") as fh:
                p = subprocess.Popen(["ip", "netns", "exec", nsname, *args],
                                     stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
            procs.append(p)
            return p

        yield {
            "tag": tag,
            "ns": ns,
            "dev_ip": dev_ip,
            "lan_ip": lan_ip,
            "spawn": spawn,
            "tmp": tmp_path,
        }
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        for v in ns.values():
            subprocess.run(["ip", "netns", "del", v], capture_output=True)


def _wait(path: Path, timeout=10):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} not created"
        time.sleep(0.05)


def test_tproxy_both_directions_keep_addresses(pki, lab):
    t, ns = lab["tmp"], lab["ns"]
    (t / "server.py").write_text(SERVER)
    (t / "client.py").write_text(CLIENT)
    py = sys.executable
    # LAN: PACS speaking TLS on 2762 (requires a client cert); device: plain DICOM on 104
    lab["spawn"](ns["lan"], py, str(t / "server.py"), "tls", lab["lan_ip"], "2762",
                 str(t / "lan.peers"), str(pki.ca), str(pki.crt("pacs")), str(pki.key("pacs")),
                 log=t / "lan.log")  # fmt: skip
    lab["spawn"](ns["dev"], py, str(t / "server.py"), "plain", lab["dev_ip"], "104",
                 str(t / "dev.peers"), log=t / "dev.log")  # fmt: skip
    cfg = box_config(
        pki, "box-a", mode="transparent", device={"ip": lab["dev_ip"]},
        outbound=[{"name": "pacs", "address": lab["lan_ip"], "port": 104, "tls_port": 2762,
                   "verify": {"cn": "pacs"}}],
        inbound=[{"name": "dicom", "port": 2762, "device_port": 104,
                  "allow": [{"cn": "pacs", "ip": lab["lan_ip"]}]}],
    )  # fmt: skip
    conf = write_yaml(t / "box.yaml", cfg)
    lab["spawn"](ns["box"], py, "-m", "medtls.cli", "run", "--config", str(conf),
                 log=t / "box.log")  # fmt: skip
    _wait(t / "lan.peers.ready")
    _wait(t / "dev.peers.ready")
    deadline = time.monotonic() + 10
    while "listening inbound" not in (t / "box.log").read_text():
        assert time.monotonic() < deadline, (t / "box.log").read_text()
        time.sleep(0.05)

    def client(nsname, *args):
        r = subprocess.run(["ip", "netns", "exec", nsname, py, str(t / "client.py"), *args],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        return r.stdout.strip() or r.stderr.strip()

    # device -> PACS:104 (plain) arrives at PACS:2762 over TLS from the device's own IP
    out = client(ns["dev"], lab["lan_ip"], "104")
    assert out == f"from {lab['dev_ip']}:hello", (t / "box.log").read_text()
    # PACS -> device:2762 (TLS, client cert) arrives at the device:104 in plain from the PACS IP
    out = client(ns["lan"], lab["dev_ip"], "2762", str(pki.ca), str(pki.crt("pacs")),
                 str(pki.key("pacs")))  # fmt: skip
    assert out == f"from {lab['lan_ip']}:hello", (t / "box.log").read_text()
    # a destination not in the peer table is refused and logged (default deny)
    out = client(ns["dev"], lab["lan_ip"], "9999")
    assert "from" not in out
    refused = f"destination={lab['lan_ip']}:9999 "
    ok = f"route=pacs client={lab['dev_ip']}:"
    deadline = time.monotonic() + 10  # a line is written as the box closes, maybe after the peer
    while True:
        log = (t / "box.log").read_text()
        lines = [x for x in log.splitlines() if "event=connection " in x]
        if any(refused in x and " result=no_route " in x for x in lines) and any(
            ok in x and " result=ok " in x for x in lines
        ):
            break
        assert time.monotonic() < deadline, log
        time.sleep(0.05)


def test_dnat_variant_uses_so_original_dst(pki, lab):
    t, ns, n_dev = lab["tmp"], lab["ns"], lab["dev_ip"]
    box_dev_ip = n_dev.rsplit(".", 1)[0] + ".1"
    box_lan_ip = lab["lan_ip"].rsplit(".", 1)[0] + ".1"
    b = f"ip netns exec {ns['box']} "
    dev_if = f"{lab['tag']}bd"  # the box's device-side veth
    sh(b + "nft delete table inet medtls_test")
    (t / "nat.nft").write_text(f"""table ip medtls_nat_test {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{dev_if}" tcp dport 104 dnat to {box_dev_ip}:15001
  }}
}}
""")
    sh(b + f"nft -f {t / 'nat.nft'}")
    (t / "server.py").write_text(SERVER)
    (t / "client.py").write_text(CLIENT)
    py = sys.executable
    lab["spawn"](ns["lan"], py, str(t / "server.py"), "tls", lab["lan_ip"], "2762",
                 str(t / "lan.peers"), str(pki.ca), str(pki.crt("pacs")), str(pki.key("pacs")),
                 log=t / "lan.log")  # fmt: skip
    cfg = box_config(
        pki, "box-a", mode="transparent", interception="dnat", device={"ip": n_dev},
        outbound=[{"name": "pacs", "address": lab["lan_ip"], "port": 104, "tls_port": 2762,
                   "verify": {"cn": "pacs"}}],
    )  # fmt: skip
    conf = write_yaml(t / "box.yaml", cfg)
    lab["spawn"](ns["box"], py, "-m", "medtls.cli", "run", "--config", str(conf),
                 log=t / "box.log")  # fmt: skip
    _wait(t / "lan.peers.ready")
    deadline = time.monotonic() + 10
    while "listening outbound" not in (t / "box.log").read_text():
        assert time.monotonic() < deadline, (t / "box.log").read_text()
        time.sleep(0.05)
    cmd = ["ip", "netns", "exec", ns["dev"], py, str(t / "client.py"), lab["lan_ip"], "104"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    # the original destination came from conntrack; the box dials from its own address
    assert r.stdout.strip() == f"from {box_lan_ip}:hello", (t / "box.log").read_text()
    # The connection line is written when the box closes its side, which may be just after the
    # client has its reply.
    deadline = time.monotonic() + 10
    while " result=ok " not in (log := (t / "box.log").read_text()):
        assert time.monotonic() < deadline, log
        time.sleep(0.05)
    assert f"route=pacs client={n_dev}:" in log, log
