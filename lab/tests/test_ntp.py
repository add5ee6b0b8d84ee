"""The box's own NTP borrows the device's identity (`ntp.servers`); nothing else of its UDP does.

A real chronyd serves time in the pacs namespace; `chronyd -Q` in the box namespace is the
client. Captures on the LAN leg (Mallory's wire) and on the device's cable decide.
"""

from __future__ import annotations

import sys

import pytest
import yaml
from medlab import ntp
from medlab import services as sv
from medlab.net import tshark
from medtls.interception.spec import NTP_PORT_RANGE, NTP_SOURCE

DEVICE_MAC = "02:00:5e:10:00:10"
LO, HI = NTP_PORT_RANGE

# UDP sent as the device by a privileged box process that bypasses the NTP path on purpose.
TRANSPARENT_UDP = """
import socket, sys
for dport in (9999, 123):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_IP, 19, 1)   # IP_TRANSPARENT
    s.bind((sys.argv[1], 0))
    s.sendto(b"box-udp-as-device", (sys.argv[2], dport))
"""


@pytest.fixture(scope="module")
def ntp_server(env):
    proc = ntp.start_server(env.lab)
    try:
        yield ntp.NTP_SERVER_IP
    finally:
        ntp.stop_server(env.lab, proc)


@pytest.fixture
def ntp_rules(env, ntp_server):
    """The lab configuration plus `ntp: {servers: [...]}`, applied; the plain one restored."""
    cfg = yaml.safe_load(env.config.read_text())
    cfg["ntp"] = {"servers": [ntp_server]}
    variant = env.lab.workdir / "ntp.yaml"
    variant.write_text(yaml.safe_dump(cfg, sort_keys=False))
    sv.apply_rules(env.lab, variant)
    try:
        yield variant
    finally:
        sv.apply_rules(env.lab, env.config)


def test_box_ntp_borrows_device_identity_and_reply_stays_on_the_box(env, ntp_rules):
    lab = env.lab
    with (
        lab.capture("mallory", "box", "ntp-lan.pcap") as lan,
        lab.capture("modality", "eth0", "ntp-device.pcap") as device,
    ):
        ok, out = ntp.query(lab, "box")
    assert ok, f"the box got no valid NTP response:\n{out}"
    requests = tshark(lan, "ntp.flags.mode == 3", ("ip.src", "udp.srcport", "eth.src"))
    assert requests, "no NTP request on the LAN leg"
    for line in requests:
        src, port, mac = line.split("\t")
        assert src == sv.DEVICE_IP and mac == DEVICE_MAC, f"request not as the device: {line}"
        assert LO <= int(port) <= HI, f"source port {port} outside {LO}-{HI}"
    assert tshark(lan, f"ntp.flags.mode == 4 and ip.dst == {sv.DEVICE_IP}"), "no reply on the LAN"
    dummy = f"ip.addr == {NTP_SOURCE} or arp.src.proto_ipv4 == {NTP_SOURCE}"
    assert tshark(lan, dummy) == [], "the dummy source left the box"
    assert tshark(device, "udp.port == 123") == [], "the device saw the box's NTP"


def test_device_ntp_still_crosses_untouched(env, ntp_rules):
    lab = env.lab
    with lab.capture("modality", "eth0", "ntp-device-own.pcap") as device:
        ok, out = ntp.query(lab, "modality")
    assert ok, f"the device's own NTP query failed:\n{out}"
    assert tshark(device, f"ntp.flags.mode == 4 and ip.src == {ntp.NTP_SERVER_IP}")


def test_box_other_udp_never_leaves_as_the_device(env, ntp_rules):
    lab = env.lab
    with lab.capture("mallory", "box", "ntp-other.pcap") as lan:
        for dst in (f"{ntp.NTP_SERVER_IP}:9999", f"{sv.PACS_IP}:123"):
            r = lab.run("box", ["socat", "-u", "-", f"UDP4:{dst}"], input="x", check=False)
            assert r.returncode != 0, f"box UDP to {dst} was routed"
        lab.run("box", [sys.executable, "-c", TRANSPARENT_UDP, sv.DEVICE_IP, ntp.NTP_SERVER_IP])
        ok, out = ntp.query(lab, "box")  # control: the capture sees the NTP path meanwhile
    assert ok, out
    udp = tshark(lan, f"udp and ip.src == {sv.DEVICE_IP}", ("udp.srcport", "udp.dstport"))
    assert udp, "control: no NTP request captured"
    leaked = [x for x in udp if not (LO <= int(x.split("\t")[0]) <= HI and x.endswith("\t123"))]
    assert leaked == [], f"box UDP left as the device: {leaked}"
    counter = lab.run("box", ["nft", "list", "counter", "bridge", "medtls", "own_udp"]).stdout
    assert "packets 0 " not in counter, counter


def test_only_the_box_ntp_is_connection_tracked(env, ntp_rules):
    lab = env.lab
    ok, out = ntp.query(lab, "box")  # its SNAT needs conntrack, which the NAT chain turns on
    assert ok, out
    sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET)  # intercepted, relayed as TLS
    table = lab.run("box", ["cat", "/proc/net/nf_conntrack"]).stdout.splitlines()
    assert [x for x in table if " udp " in x and "dport=123" in x], f"control: {table}"
    device = [x for x in table if f"={sv.DEVICE_IP} " in x and " udp " not in x]
    assert device == [], f"the device's flows are tracked: {device}"


def test_without_ntp_servers_the_box_has_no_time(env, ntp_server):
    """The configuration without `ntp:` (what every box had before): the device still syncs."""
    ok, out = ntp.query(env.lab, "box", timeout=2)
    assert not ok, f"the box reached NTP without ntp.servers:\n{out}"
    ok, out = ntp.query(env.lab, "modality")
    assert ok, f"control: the device's NTP failed:\n{out}"
