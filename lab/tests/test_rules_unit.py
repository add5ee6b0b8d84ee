"""Pure rule generation and device learning: no sockets, no namespaces (except the nft -c check)."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from medlab.services import EXAMPLE_CONFIG, medtls_argv
from medtls.config import load_config, parse_config
from medtls.interception import ruleset
from medtls.interception.learn import Changed, Identity, Learned, Learner, parse_frame
from medtls.interception.spec import InterceptionError, spec_from_config

BR_MAC = "02:00:5e:10:00:b0"
DEV_MAC = "02:00:5e:10:00:10"


def _cfg(**changes):
    raw = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return parse_config(raw, EXAMPLE_CONFIG, check_files=False)


def _spec(**changes):
    return spec_from_config(_cfg(**changes))


def test_example_config_renders_one_transaction_replacing_both_tables():
    text = ruleset.render(_spec(), BR_MAC)
    head = [line for line in text.splitlines() if line and not line.startswith("#")][:4]
    assert head == ["table bridge medtls", "delete table bridge medtls",
                    "table inet medtls", "delete table inet medtls"]  # fmt: skip
    assert "net.bridge.bridge-nf-call-iptables = 0" in text
    assert "ip -4 rule add fwmark 0x6d74 lookup 28020 priority 10200" in text
    assert "ip -4 route replace local 0.0.0.0/0 dev lo table 28020" in text


def test_steering_and_tproxy_follow_the_config():
    spec = _spec()
    bridge, inet = ruleset.bridge_table(spec, BR_MAC), ruleset.inet_table(spec)
    steer = f"meta pkttype set host ether daddr set {BR_MAC} accept"
    assert 'iifname "eth0" ip saddr 198.18.0.10 meta l4proto tcp jump from_device' in bridge
    assert f"tcp dport {{ 2576, 2762 }} {steer}" in bridge
    assert f"tcp dport 40000-60999 {steer}" in bridge
    assert "tproxy ip to :15001" in inet and "tproxy ip to :15002" in inet
    assert "ip daddr 198.18.0.10 tcp dport { 2576, 2762 } tproxy ip to :15002" in inet
    assert "ip saddr 198.18.0.10 meta l4proto tcp reject with tcp reset" in inet
    assert 'counter name "plaintext_tcp" drop' in bridge
    assert 'ether type ip6 meta l4proto tcp counter name "ipv6_tcp" drop' in bridge
    assert "fwd" not in bridge.replace("forward", "")


def test_device_mac_pins_the_device_port_and_masks_the_box():
    bridge = ruleset.bridge_table(_spec(), BR_MAC)
    assert f'iifname "eth0" ether saddr != {DEV_MAC} counter name "foreign_mac" drop' in bridge
    assert f'oifname "eth1" ip saddr 198.18.0.10 ether saddr set {DEV_MAC}' in bridge
    no_mac = ruleset.bridge_table(_spec(device={"ip": "198.18.0.10"}), BR_MAC)
    assert 'foreign_mac" drop' not in no_mac and "ether saddr set" not in no_mac
    routes = ruleset.ip_routes(_spec())
    assert ["-4", "neigh", "replace", "198.18.0.10", "lladdr", DEV_MAC, "dev", "br0",
            "nud", "permanent"] in routes  # fmt: skip


def test_passthrough_and_plaintext_peers_are_the_only_bridged_tcp():
    outbound = yaml.safe_load(EXAMPLE_CONFIG.read_text())["outbound"] + [
        {"name": "printer", "address": "198.18.0.40", "port": 9100, "plaintext": True}
    ]
    spec = _spec(passthrough={"inbound_ports": [8080, 23]}, outbound=outbound)
    bridge = ruleset.bridge_table(spec, BR_MAC)
    assert "elements = { 198.18.0.40 . 9100 }" in bridge
    assert 'iifname "eth1" oifname "eth0" ip daddr 198.18.0.10 tcp dport { 23, 8080 } accept' in (
        bridge
    )
    assert "tcp dport { 23, 8080 } return" in bridge


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device": {"ip": "auto"}}, "device.ip: auto: the device is not learned yet"),
        ({"passthrough": {"inbound_ports": [45000]}}, "reserved source port range 40000-60999"),
        ({"passthrough": {"inbound_ports": [2762]}}, "2762 is also an inbound TLS port"),
        ({"interfaces": {"device": "eth0", "lan": "eth0", "bridge": "br0"}}, "three different"),
        ({"device": {"ip": "2001:db8::10"}}, "only an IPv4 device address"),
    ],
)
def test_bad_input_gives_one_line_errors(changes, message):
    try:
        cfg = _cfg(**changes)
    except Exception as e:  # an error of the config loader itself is fine too
        pytest.fail(f"config rejected before the rules: {e}")
    with pytest.raises(InterceptionError) as err:
        spec_from_config(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_explicit_mode_has_no_rules():
    with pytest.raises(InterceptionError, match="only for mode: transparent"):
        spec_from_config(dataclasses.replace(_cfg(), mode="explicit"))


def test_cli_renders_and_reports_errors_without_traceback(tmp_path):
    ok = subprocess.run(medtls_argv("rules", "--config", str(EXAMPLE_CONFIG), "--bridge-mac",
                                    BR_MAC), capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0 and "table bridge medtls {" in ok.stdout, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE_CONFIG.read_text().replace("ip: 198.18.0.10  ", "ip: auto  "))
    r = subprocess.run(medtls_argv("rules", "--config", str(bad), "--bridge-mac", BR_MAC,
                                   "--state", str(tmp_path / "none.json")),
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("medtls rules: device.ip: auto")
    r = subprocess.run(medtls_argv("rules", "--config", str(tmp_path / "missing.yaml")),
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "configuration file not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _nft_check(text: str) -> subprocess.CompletedProcess:
    ns = f"mtchk-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        return subprocess.run(["ip", "netns", "exec", ns, "nft", "-c", "-f", "-"], input=text,
                              capture_output=True, text=True)  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft missing")
def test_every_variant_is_accepted_by_the_kernel():
    outbound = yaml.safe_load(EXAMPLE_CONFIG.read_text())["outbound"] + [
        {"name": "printer", "address": "198.18.0.40", "port": 9100, "plaintext": True}
    ]
    variants = [
        {},
        {"device": {"ip": "198.18.0.10"}},
        {"passthrough": {"inbound_ports": [8080]}, "outbound": outbound},
        {"inbound": None},
        {"ntp": {"servers": ["198.18.0.123", "198.18.0.124"]}},
        {"ntp": {"servers": ["198.18.0.123"]}, "device": {"ip": "198.18.0.10"}},
    ]
    for changes in variants:
        r = _nft_check(ruleset.nft_script(_spec(**changes), BR_MAC))
        assert r.returncode == 0, f"{changes}: {r.stderr}"


# --------------------------------------------------------------------------- learning


def _eth(src: str, etype: int, body: bytes, dst: str = "ff:ff:ff:ff:ff:ff") -> bytes:
    mac = lambda m: bytes.fromhex(m.replace(":", ""))  # noqa: E731
    return mac(dst) + mac(src) + struct.pack("!H", etype) + body


def _arp(src_mac: str, sender_ip: str, target_ip: str = "198.18.0.20") -> bytes:
    ip = lambda a: bytes(int(x) for x in a.split("."))  # noqa: E731
    body = b"\x00\x01\x08\x00\x06\x04\x00\x01" + bytes.fromhex(src_mac.replace(":", ""))
    body += ip(sender_ip) + b"\x00" * 6 + ip(target_ip)
    return _eth(src_mac, 0x0806, body)


def _ipv4(src_mac: str, src: str, proto: int = 1, l4: bytes = b"") -> bytes:
    ip = bytes(int(x) for x in src.split("."))
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0) + ip + b"\xff" * 4
    return _eth(src_mac, 0x0800, hdr + l4)


def _dhcp_request(src_mac: str, requested: str) -> bytes:
    bootp = bytearray(240)
    bootp[0] = 1
    bootp[236:240] = b"\x63\x82\x53\x63"
    opts = bytes([53, 1, 3, 50, 4, *(int(x) for x in requested.split("."))]) + b"\xff"
    udp = struct.pack("!HHHH", 68, 67, 8 + 240 + len(opts), 0) + bytes(bootp) + opts
    return _ipv4(src_mac, "0.0.0.0", 17, udp)


def test_parse_frames_from_arp_dhcp_and_ip():
    assert parse_frame(_arp(DEV_MAC, "198.18.0.10")).ip == "198.18.0.10"
    assert parse_frame(_arp(DEV_MAC, "0.0.0.0")).ip is None  # a probe claims nothing yet
    dhcp = parse_frame(_dhcp_request(DEV_MAC, "198.18.0.11"))
    assert (dhcp.ip, dhcp.source) == ("198.18.0.11", "dhcp")
    obs = parse_frame(_ipv4(DEV_MAC, "198.18.0.10"))
    assert (obs.mac, obs.ip, obs.source) == (DEV_MAC, "198.18.0.10", "ipv4")
    assert parse_frame(_ipv4("01:00:5e:00:00:01", "198.18.0.10")) is None
    assert parse_frame(b"\x00" * 10) is None


def test_learner_learns_once_then_reports_changes_once():
    learner = Learner()
    assert learner.feed(parse_frame(_arp(DEV_MAC, "0.0.0.0"))) is None
    event = learner.feed(parse_frame(_arp(DEV_MAC, "198.18.0.10")))
    assert isinstance(event, Learned) and event.identity == Identity(DEV_MAC, "198.18.0.10")
    assert learner.feed(parse_frame(_ipv4(DEV_MAC, "198.18.0.10"))) is None
    other = parse_frame(_ipv4("02:00:5e:10:00:99", "198.18.0.10"))
    change = learner.feed(other)
    assert isinstance(change, Changed) and "02:00:5e:10:00:99" in str(change)
    assert learner.feed(other) is None
    assert isinstance(learner.feed(parse_frame(_ipv4(DEV_MAC, "198.18.0.77"))), Changed)


def test_learner_with_recorded_device_refuses_another():
    learner = Learner(Identity(DEV_MAC, "198.18.0.10"))
    assert learner.feed(parse_frame(_arp(DEV_MAC, "198.18.0.10"))) is None
    assert isinstance(learner.feed(parse_frame(_arp("02:00:5e:10:00:99", "198.18.0.10"))), Changed)


def test_example_config_is_the_lab_contract():
    cfg = load_config(EXAMPLE_CONFIG, check_files=False)
    assert cfg.device.ip == "198.18.0.10" and cfg.interfaces.bridge == "br0"
    assert Path(EXAMPLE_CONFIG).name == "ct-modality.yaml"
