"""`ntp.servers`: the LAN NTP servers the box reaches as the device (schema only, no sockets)."""

from pathlib import Path

import pytest
import yaml
from medtls.config import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ct-modality.yaml"


def parse(ntp):
    raw = yaml.safe_load(EXAMPLE.read_text())
    if ntp is not None:
        raw["ntp"] = ntp
    return parse_config(raw, Path("/nonexistent/x.yaml"), check_files=False)


def problems(ntp) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(ntp)
    return [str(p) for p in e.value.problems]


def test_absent_or_empty_means_no_borrowed_ntp():
    assert parse(None).ntp.servers == ()
    assert parse({}).ntp.servers == ()
    assert parse({"servers": []}).ntp.servers == ()


def test_servers_parsed_in_order():
    assert parse({"servers": ["198.18.0.123", " 198.18.0.124 "]}).ntp.servers == (
        "198.18.0.123",
        "198.18.0.124",
    )


def test_example_documents_the_key_commented_out():
    text = EXAMPLE.read_text()
    assert "# ntp:" in text and "#   servers:" in text
    assert load_config(EXAMPLE, check_files=False).ntp.servers == ()


@pytest.mark.parametrize(
    ("ntp", "expected"),
    [
        ("198.18.0.123", "ntp: must be a mapping, got a string"),
        ({"servers": "198.18.0.123"},
         "ntp.servers: must be a list of IPv4 addresses, got a string"),
        ({"server": ["198.18.0.123"]}, "ntp.server: unknown key (allowed: servers)"),
        ({"servers": ["ntp.hospital.example"]},
         "ntp.servers[0]: not an IPv4 address: 'ntp.hospital.example' (names are not resolved"),
        ({"servers": ["198.18.0.123", 5]}, "ntp.servers[1]: not an IPv4 address: 5"),
        ({"servers": ["2001:db8::123"]}, "ntp.servers[0]: 2001:db8::123: only IPv4 NTP servers"),
        ({"servers": ["224.0.1.1"]}, "ntp.servers[0]: 224.0.1.1: not a unicast address"),
        ({"servers": ["127.0.0.1"]}, "ntp.servers[0]: 127.0.0.1: not a unicast address"),
        ({"servers": ["255.255.255.255"]}, "ntp.servers[0]: 255.255.255.255: not a unicast"),
        ({"servers": ["198.18.0.123", "198.18.0.123"]},
         "ntp.servers[1]: 198.18.0.123 is listed twice"),
        ({"servers": [f"198.18.0.{i}" for i in range(100, 109)]},
         "ntp.servers: at most 8 servers, got 9"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key_path(ntp, expected):
    got = problems(ntp)
    assert any(p.startswith(expected) for p in got), got
    assert all("\n" not in p for p in got)
