"""`device.prefix` / `device.gateway`: the device's subnet and router (schema only, no sockets)."""

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import MEDTLS
from medtls.config import ConfigError, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ct-modality.yaml"


def parse(**device):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["device"].update(device)
    return parse_config(raw, Path("/nonexistent/x.yaml"), check_files=False)


def problems(**device) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(**device)
    return [str(p) for p in e.value.problems]


def test_absent_means_everything_on_link():
    d = parse().device
    assert (d.prefix, d.gateway) == (None, None)


def test_parsed():
    d = parse(prefix=24, gateway=" 198.18.0.1 ").device
    assert (d.prefix, d.gateway) == (24, "198.18.0.1")
    assert parse(ip="auto", prefix=24, gateway="198.18.0.1").device.gateway == "198.18.0.1"
    # A /31 has no network or broadcast address: the other end is the router (RFC 3021).
    assert parse(ip="198.18.0.10", prefix=31, gateway="198.18.0.11").device.prefix == 31


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ({"gateway": "198.18.0.1"}, "device.prefix: required with device.gateway"),
        ({"prefix": 24}, "device.gateway: required with device.prefix"),
        ({"prefix": 24, "gateway": "router.hospital.example"},
         "device.gateway: not an IPv4 address: 'router.hospital.example'"),
        ({"prefix": 24, "gateway": "2001:db8::1"}, "device.gateway: not an IPv4 address"),
        ({"prefix": 24, "gateway": 7}, "device.gateway: not an IPv4 address: 7"),
        ({"prefix": 24, "gateway": "224.0.0.1"}, "device.gateway: 224.0.0.1: not a unicast"),
        ({"prefix": 33, "gateway": "198.18.0.1"}, "device.prefix: must be the device's IPv4 "
         "prefix length 1-31 (e.g. 24), got 33"),
        ({"prefix": "24", "gateway": "198.18.0.1"}, "device.prefix: must be the device's IPv4"),
        ({"prefix": True, "gateway": "198.18.0.1"}, "device.prefix: must be the device's IPv4"),
        ({"prefix": 24, "gateway": "198.18.1.1"}, "device.gateway: 198.18.1.1 is outside the "
         "device's subnet 198.18.0.0/24 (device 198.18.0.10/24)"),
        ({"prefix": 24, "gateway": "198.18.0.10"},
         "device.gateway: 198.18.0.10 is the device's own address"),
        ({"prefix": 24, "gateway": "198.18.0.0"},
         "device.gateway: 198.18.0.0 is the network address of 198.18.0.0/24"),
        ({"prefix": 24, "gateway": "198.18.0.255"},
         "device.gateway: 198.18.0.255 is the broadcast address of 198.18.0.0/24"),
        ({"ip": "2001:db8::10", "prefix": 24, "gateway": "198.18.0.1"},
         "device.gateway: device.ip 2001:db8::10 is not IPv4"),
    ],
)  # fmt: skip
def test_wrong_values_are_one_line_errors_naming_the_key(device, message):
    found = problems(**device)
    assert len(found) == 1 and found[0].startswith(message), found


def test_example_documents_the_keys_commented_out():
    text = EXAMPLE.read_text()
    assert "# prefix: 24" in text and "# gateway: 198.18.0.1" in text


def test_cli_reports_the_key_without_traceback(tmp_path):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["device"].update(prefix=24, gateway="198.18.7.1")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    argv = [*MEDTLS, "rules", "show", "--config", str(bad), "--bridge-mac", "02:00:5e:10:00:b0"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "device.gateway: 198.18.7.1 is outside the device's subnet 198.18.0.0/24" in r.stderr
    assert "Traceback" not in r.stderr
