"""Mallory's tools on the LAN wire she controls (the bridge `wire` in her namespace)."""

from __future__ import annotations

import contextlib
import sys

from medlab.net import LAB_DIR, Lab

MITM_PORT = 17000
MITM_MARK = "0x4d41"
MITM_TABLE = "19777"


def _nft(target_ip: str, wire_mac: str) -> str:
    steer = f"meta pkttype set host ether daddr set {wire_mac} accept"
    mark = f"meta mark set {MITM_MARK}"
    return f"""table bridge mallory
delete table bridge mallory
table inet mallory
delete table inet mallory
table bridge mallory {{
	chain prerouting {{
		type filter hook prerouting priority -300; policy accept;
		iifname "box" ip daddr {target_ip} meta l4proto tcp {steer}
		iifname "pacs" ip saddr {target_ip} meta l4proto tcp {steer}
	}}
}}
table inet mallory {{
	chain prerouting {{
		type filter hook prerouting priority mangle; policy accept;
		meta l4proto tcp socket transparent 1 {mark} accept
		ip daddr {target_ip} meta l4proto tcp tproxy ip to :{MITM_PORT} {mark} accept
	}}
}}
"""


@contextlib.contextmanager
def on_path_relay(lab: Lab, target_ip: str, flip_at: int | None):
    """Mallory relays every TCP connection to `target_ip`, flipping one byte if asked."""
    wire_mac = lab.run("mallory", ["cat", "/sys/class/net/wire/address"]).stdout.strip()
    argv = [sys.executable, "-m", "medlab.mitm", str(MITM_PORT)]
    if flip_at is not None:
        argv += ["--flip-at", str(flip_at)]
    log = f"mitm-{flip_at}.log"
    proc = lab.spawn("mallory", argv, log, env={"PYTHONPATH": str(LAB_DIR)})
    try:
        lab.wait_listen("mallory", MITM_PORT, proc=proc, log=log)
        lab.run("mallory", ["nft", "-f", "-"], input=_nft(target_ip, wire_mac))
        lab.run("mallory", ["ip", "rule", "add", "fwmark", MITM_MARK, "lookup", MITM_TABLE])
        lab.run("mallory", ["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo",
                            "table", MITM_TABLE])  # fmt: skip
        yield log
    finally:
        lab.run("mallory", ["nft", "delete", "table", "bridge", "mallory"], check=False)
        lab.run("mallory", ["nft", "delete", "table", "inet", "mallory"], check=False)
        lab.run("mallory", ["ip", "rule", "del", "fwmark", MITM_MARK], check=False)
        lab.run("mallory", ["ip", "route", "flush", "table", MITM_TABLE], check=False)
        lab.stop(proc)


@contextlib.contextmanager
def as_pacs(lab: Lab, pacs_ip: str = "198.18.0.20"):
    """The PACS's cable is pulled and Mallory answers for its address."""
    lab.run("mallory", ["ip", "link", "set", "pacs", "down"])
    lab.run("mallory", ["ip", "addr", "add", f"{pacs_ip}/32", "dev", "wire"])
    lab.run("mallory", ["ip", "route", "replace", "198.18.0.0/24", "dev", "wire", "src", pacs_ip])
    lab.run("box", ["ip", "neigh", "flush", "to", pacs_ip], check=False)
    try:
        yield
    finally:
        lab.run("mallory", ["ip", "addr", "del", f"{pacs_ip}/32", "dev", "wire"], check=False)
        lab.run("mallory", ["ip", "route", "replace", "198.18.0.0/24", "dev", "wire",
                            "src", "198.18.0.66"], check=False)  # fmt: skip
        lab.run("mallory", ["ip", "link", "set", "pacs", "up"], check=False)
        lab.run("box", ["ip", "neigh", "flush", "to", pacs_ip], check=False)
        lab.run("modality", ["ip", "neigh", "flush", "to", pacs_ip], check=False)
