"""The NTP part of the interception ruleset: pure rendering, no sockets, no namespaces."""

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import MEDTLS
from medtls.config import parse_config
from medtls.interception import ruleset, timesync
from medtls.interception.spec import (
    NTP_PORT_RANGE,
    NTP_SOURCE,
    InterceptionError,
    spec_from_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ct-modality.yaml"
BR_MAC = "02:00:5e:10:00:b0"
STEER = f"meta pkttype set host ether daddr set {BR_MAC} accept"


def spec(servers=None, **changes):
    raw = yaml.safe_load(EXAMPLE.read_text())
    if servers is not None:
        raw["ntp"] = {"servers": servers}
    raw.update(changes)
    return spec_from_config(parse_config(raw, EXAMPLE, check_files=False))


def test_port_range_is_owned_and_outside_the_ephemeral_ranges():
    lo, hi = NTP_PORT_RANGE
    assert (lo, hi) == (28100, 28115)
    assert hi < 32768, "inside Linux's default ephemeral range: device replies could be taken"


def test_no_servers_no_ntp_path_but_box_udp_as_device_dropped():
    s = spec()
    bridge, inet = ruleset.bridge_table(s, BR_MAC), ruleset.inet_table(s)
    assert "ntp_servers" not in bridge + inet
    assert "snat" not in inet and "notrack" not in inet
    assert 'ip saddr 198.18.0.10 meta l4proto udp counter name "own_udp" drop' in bridge
    assert f'ip saddr {NTP_SOURCE} counter name "own_udp" drop' in bridge
    assert f"arp saddr ip {NTP_SOURCE} drop" in bridge
    assert all("28022" not in " ".join(a) for a in ruleset.ip_rules(s) + ruleset.ip_routes(s))


def test_servers_render_steering_snat_and_the_only_allowed_box_udp():
    s = spec(["198.18.0.123", "198.18.0.124"])
    bridge, inet = ruleset.bridge_table(s, BR_MAC), ruleset.inet_table(s)
    assert "elements = { 198.18.0.123, 198.18.0.124 }" in bridge
    assert "elements = { 198.18.0.123, 198.18.0.124 }" in inet
    assert (
        'iifname "eth1" ip daddr 198.18.0.10 ip saddr @ntp_servers udp sport 123 '
        f"udp dport 28100-28115 {STEER}"
    ) in bridge
    out = bridge[bridge.index("chain output") :]
    allow = "ip saddr 198.18.0.10 ip daddr @ntp_servers udp sport 28100-28115 udp dport 123 accept"
    drop = 'ip saddr 198.18.0.10 meta l4proto udp counter name "own_udp" drop'
    # The device MAC is set first, the NTP exception precedes the catch-all drop.
    assert out.index("ether saddr set") < out.index(allow) < out.index(drop)
    assert (
        f'oifname "br0" ip saddr {NTP_SOURCE} ip daddr @ntp_servers udp dport 123 '
        "snat ip to 198.18.0.10:28100-28115"
    ) in inet
    assert "type nat hook postrouting priority srcnat;" in inet
    raw_pre = inet[inet.index("chain raw_prerouting") :]
    assert raw_pre.index("udp dport 28100-28115 return") < raw_pre.index("notrack")


def test_servers_render_policy_routing_from_the_dummy_source():
    s = spec(["198.18.0.123", "198.18.0.124"])
    rules = [" ".join(a) for a in ruleset.ip_rules(s)]
    routes = [" ".join(a) for a in ruleset.ip_routes(s)]
    for server in ("198.18.0.123", "198.18.0.124"):
        assert f"-4 rule add to {server} ipproto udp dport 123 lookup 28022 priority 10203" in rules
    addr = f"-4 addr replace {NTP_SOURCE}/32 dev lo scope host"
    route = f"-4 route replace default dev br0 scope link src {NTP_SOURCE} table 28022"
    assert routes.index(addr) < routes.index(route), "the source must exist before the route"
    assert 10203 in ruleset.rule_priorities()
    text = ruleset.render(s, BR_MAC)
    assert f"#   ip {route}" in text


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        (["198.18.0.10"], "ntp.servers[0]: 198.18.0.10 is the device's own address"),
        (["198.18.0.123", NTP_SOURCE], f"ntp.servers[1]: {NTP_SOURCE} is reserved by medtls"),
    ],
)
def test_servers_that_cannot_work_are_refused_with_the_key_path(servers, message):
    with pytest.raises(InterceptionError) as e:
        spec(servers)
    assert str(e.value) == message


def test_timesyncd_dropin_lists_exactly_the_servers_and_resets_others():
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["ntp"] = {"servers": ["198.18.0.123", "198.18.0.124"]}
    text = timesync.dropin(parse_config(raw, EXAMPLE, check_files=False))
    lines = [x for x in text.splitlines() if x and not x.startswith("#")]
    assert lines == ["[Time]", "NTP=", "NTP=198.18.0.123 198.18.0.124", "FallbackNTP="]
    raw.pop("ntp")
    assert timesync.dropin(parse_config(raw, EXAMPLE, check_files=False)) is None


def test_cli_writes_and_removes_the_runtime_dropin(tmp_path):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["ntp"] = {"servers": ["198.18.0.123"]}
    with_ntp, without = tmp_path / "ntp.yaml", tmp_path / "plain.yaml"
    with_ntp.write_text(yaml.safe_dump(raw))
    raw.pop("ntp")
    without.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run" / "timesyncd.conf.d" / "medtls.conf"

    def rules(config):
        argv = [*MEDTLS, "rules", "timesyncd", "--config", str(config), "--output", str(out)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    r = rules(with_ntp)
    assert r.returncode == 0, r.stderr
    assert "NTP=198.18.0.123\n" in out.read_text() and oct(out.stat().st_mode)[-3:] == "644"
    r = rules(without)
    assert r.returncode == 0 and not out.exists(), r.stdout + r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text() + "ntp:\n  servers: [ntp.example]\n")
    r = rules(bad)
    assert r.returncode == 2 and "ntp.servers[0]: not an IPv4 address" in r.stderr
    assert "Traceback" not in r.stderr
