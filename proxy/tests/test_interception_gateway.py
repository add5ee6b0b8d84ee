"""Routes of the box's traffic as the device with `device.gateway`: pure rendering, no sockets."""

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import MEDTLS
from medtls.config import parse_config
from medtls.interception import ruleset
from medtls.interception.spec import NTP_SOURCE, InterceptionError, spec_from_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ct-modality.yaml"
BR_MAC = "02:00:5e:10:00:b0"
GW = {"prefix": 24, "gateway": "198.18.0.1"}


def spec(device=None, ntp=None, **kw):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["device"].update(device or {})
    if ntp:
        raw["ntp"] = {"servers": ntp}
    return spec_from_config(parse_config(raw, EXAMPLE, check_files=False), **kw)


def routes(s) -> list[str]:
    return [" ".join(a) for a in ruleset.ip_routes(s)]


def test_without_gateway_every_destination_is_on_link():
    s = spec(ntp=["198.18.0.123"])
    assert (s.subnet, s.gateway) == (None, None)
    assert "-4 route replace default dev br0 scope link table 28021" in routes(s)
    assert f"-4 route replace default dev br0 scope link src {NTP_SOURCE} table 28022" in routes(s)
    assert not any(" via " in r for r in routes(s))


def test_gateway_routes_off_subnet_via_router_on_link_otherwise():
    s = spec(GW, ntp=["198.18.5.123"])
    assert (s.subnet, s.gateway) == ("198.18.0.0/24", "198.18.0.1")
    got = routes(s)
    for table, src in (("28021", ""), ("28022", f"src {NTP_SOURCE} ")):
        link = f"-4 route replace 198.18.0.0/24 dev br0 scope link {src}table {table}"
        via = f"-4 route replace default via 198.18.0.1 dev br0 onlink {src}table {table}"
        assert link in got and via in got
        assert got.index(link) < got.index(via)
        assert f"default dev br0 scope link {src}table {table}" not in " | ".join(got)
    assert ruleset.route_destinations(s, 28021) == {"198.18.0.0/24", "default"}
    assert ruleset.route_destinations(s, 28022) == {"198.18.0.0/24", "default"}
    assert ruleset.route_destinations(spec(), 28021) == {"default"}
    # Only the owned tables, rules and priorities: the gateway adds routes, nothing else.
    assert ruleset.ip_rules(s) == ruleset.ip_rules(spec(ntp=["198.18.5.123"]))
    assert ruleset.rule_priorities() == [10200, 10201, 10202, 10203]
    assert ruleset.nft_script(s, BR_MAC) == ruleset.nft_script(spec(ntp=["198.18.5.123"]), BR_MAC)
    assert "#   ip -4 route replace default via 198.18.0.1 dev br0 onlink table 28021" in (
        ruleset.render(s, BR_MAC)
    )


def test_subnet_is_derived_from_the_learned_device_ip():
    s = spec({"ip": "auto", "prefix": 20, "gateway": "198.18.0.1"}, device_ip="198.18.3.7")
    assert s.subnet == "198.18.0.0/20"
    assert "-4 route replace 198.18.0.0/20 dev br0 scope link table 28021" in routes(s)


@pytest.mark.parametrize(
    ("device_ip", "message"),
    [
        ("198.18.9.7", "device.gateway: 198.18.0.1 is outside the device's subnet 198.18.9.0/24 "
         "(device 198.18.9.7/24)"),
        ("198.18.0.1", "device.gateway: 198.18.0.1 is the device's own address"),
    ],
)  # fmt: skip
def test_learned_device_that_does_not_fit_the_gateway_is_refused(device_ip, message):
    with pytest.raises(InterceptionError) as e:
        spec({"ip": "auto", **GW}, device_ip=device_ip)
    assert str(e.value) == message


def test_cli_show_prints_the_gateway_routes(tmp_path):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["device"].update(GW)
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    argv = [*MEDTLS, "rules", "--config", str(cfg), "--bridge-mac", BR_MAC]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "ip -4 route replace 198.18.0.0/24 dev br0 scope link table 28021" in r.stdout
    assert "ip -4 route replace default via 198.18.0.1 dev br0 onlink table 28021" in r.stdout
