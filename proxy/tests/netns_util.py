"""A box-like namespace and a LAN namespace joined by a veth pair, for enrollment tests.

box (198.18.N.1/24, IP_TRANSPARENT policy routing: fwmark 1 -> local table 100, sockets marked by
`socket transparent 1`) --veth-- lan (198.18.N.20/24; routes the device IP 198.18.N.10 via the box,
as the bridge's steer-up rules would deliver its replies to the box).
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class BoxLan:
    box: str
    lan: str
    box_ip: str
    lan_ip: str
    device_ip: str

    def run(self, ns: str, *argv: str, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(["ip", "netns", "exec", ns, *argv], **kw)

    def popen(self, ns: str, *argv: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)


def _sh(*cmds: str) -> None:
    for c in cmds:
        subprocess.run(c, shell=True, check=True, capture_output=True, timeout=20)


@contextlib.contextmanager
def box_and_lan(prefix: str) -> Iterator[BoxLan]:
    n = random.randint(100, 250)
    tag = f"{prefix}{os.getpid() % 1000}{n}"
    box, lan = f"{tag}b", f"{tag}l"
    net = BoxLan(box, lan, f"198.18.{n}.1", f"198.18.{n}.20", f"198.18.{n}.10")
    try:
        _sh(f"ip netns add {box}", f"ip netns add {lan}")
        _sh(
            f"ip link add {tag}x type veth peer name {tag}y",
            f"ip link set {tag}x netns {box}",
            f"ip link set {tag}y netns {lan}",
        )
        b, la = f"ip netns exec {box} ", f"ip netns exec {lan} "
        _sh(
            b + f"ip addr add {net.box_ip}/24 dev {tag}x", b + f"ip link set {tag}x up",
            b + "ip link set lo up", b + "sysctl -qw net.ipv4.conf.all.rp_filter=0",
            b + "ip rule add fwmark 1 lookup 100",
            b + "ip route add local 0.0.0.0/0 dev lo table 100",
            la + f"ip addr add {net.lan_ip}/24 dev {tag}y", la + f"ip link set {tag}y up",
            la + "ip link set lo up",
            la + f"ip route add {net.device_ip}/32 via {net.box_ip}",
        )  # fmt: skip
        rules = (
            "table inet medtls_enroll_test {\n chain pre {\n"
            "  type filter hook prerouting priority mangle; policy accept;\n"
            "  meta l4proto tcp socket transparent 1 meta mark set 1 accept\n }\n}\n"
        )
        subprocess.run(["ip", "netns", "exec", box, "nft", "-f", "-"], input=rules, text=True,
                       check=True, capture_output=True, timeout=20)  # fmt: skip
        yield net
    finally:
        for ns in (box, lan):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
