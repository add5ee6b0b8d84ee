"""Config schema validation without sockets."""

from pathlib import Path

import pytest
import yaml
from medtls.config import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ct-modality.yaml"


def raw_example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def problems(raw, tmp_path=None, check_files=False) -> list[str]:
    path = (tmp_path or Path("/nonexistent")) / "x.yaml"
    with pytest.raises(ConfigError) as e:
        parse_config(raw, path, check_files=check_files)
    return [str(p) for p in e.value.problems]


def test_example_parses_without_files():
    cfg = load_config(EXAMPLE, check_files=False)
    assert cfg.mode == "transparent"
    assert cfg.device.ip == "198.18.0.10"
    assert cfg.listeners.outbound == 15001
    assert [p.name for p in cfg.outbound] == ["pacs", "his"]
    pacs = cfg.outbound[0]
    assert (pacs.port, pacs.tls_port, pacs.sni) == (104, 2762, "pacs.hospital.example")
    assert pacs.verify.ip == "198.18.0.20"
    assert cfg.outbound[1].tls_port == 2575  # defaults to port
    dicom = cfg.inbound[0]
    assert (dicom.port, dicom.device_port) == (2762, 104)
    assert dicom.allow[0].cn == "pacs" and dicom.allow[0].ip == "198.18.0.20"
    assert dicom.allow[1].dns == "ris.hospital.example"
    assert cfg.limits.idle_timeout == 0 and cfg.limits.drain_timeout == 30
    assert cfg.profile == "bcp195" and cfg.workers == 1
    assert cfg.session_lifetime == 0  # resumption is opt-in


def test_example_missing_files_are_named_with_key_path():
    with pytest.raises(ConfigError) as e:
        load_config(EXAMPLE)
    assert "identity.certificate: file not found: /etc/medtls/device.crt" in str(e.value)
    assert "trust.ca: file not found: /etc/medtls/ca.pem" in str(e.value)


def test_unknown_keys_are_errors_everywhere():
    raw = raw_example()
    raw["colour"] = "blue"
    raw["outbound"][1]["verify"]["cname"] = "his"
    raw["inbound"][0]["allow"][1]["dnss"] = "x"
    raw["limits"]["max_conn"] = 5
    got = problems(raw)
    assert any(p.startswith("colour: unknown key") for p in got)
    assert any(p.startswith("outbound[1].verify.cname: unknown key") for p in got)
    assert any(p.startswith("inbound[0].allow[1].dnss: unknown key") for p in got)
    assert any(p.startswith("limits.max_conn: unknown key") for p in got)


def test_per_peer_ca_not_found_names_path(tmp_path):
    raw = raw_example()
    for k in ("certificate", "key"):
        (tmp_path / k).write_text("x")
        raw["identity"][k] = str(tmp_path / k)
    (tmp_path / "ca").write_text("x")
    raw["trust"]["ca"] = str(tmp_path / "ca")
    raw["outbound"][1]["verify"]["ca"] = "/x/pacs-ca.pem"
    assert problems(raw, tmp_path, check_files=True) == [
        "outbound[1].verify.ca: file not found: /x/pacs-ca.pem"
    ]


def test_relative_paths_resolve_against_config_dir(tmp_path):
    for name in ("d.crt", "d.key", "ca.pem"):
        (tmp_path / name).write_text("x")
    raw = raw_example()
    raw["identity"] = {"certificate": "d.crt", "key": "d.key"}
    raw["trust"] = {"ca": "ca.pem"}
    cfg = parse_config(raw, tmp_path / "medtls.yaml")
    assert cfg.identity.certificate == tmp_path / "d.crt"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["outbound"][0].update(port=70000), "outbound[0].port: must be a port"),
        (lambda r: r["outbound"][0].update(address="pacs"), "outbound[0].address: not an IP"),
        (lambda r: r["outbound"][0].pop("verify"), "outbound[0].verify: required key missing"),
        (lambda r: r["outbound"][1].update(verify={}), "outbound[1].verify: at least one of"),
        (lambda r: r["outbound"][1].update(name="pacs"), "outbound[1].name: duplicate name"),
        (
            lambda r: r["outbound"][1].update(address="198.18.0.20", port=104),
            "outbound[1]: duplicate destination 198.18.0.20:104",
        ),
        (lambda r: r["inbound"][1].update(port=2762), "inbound[1].port: duplicate port 2762"),
        (lambda r: r["inbound"][0].update(allow=[]), "inbound[0].allow: must be a non-empty"),
        (
            lambda r: r["inbound"][0]["allow"].append({"ip": "1.2.3.4"}),
            "inbound[0].allow[2]: at least one of",
        ),
        (lambda r: r["tls"].update(profile="tls10"), "tls.profile: unknown TLS profile 'tls10'"),
        (lambda r: r["tls"].update(session_lifetime=-1), "tls.session_lifetime: must be whole"),
        (
            lambda r: r["tls"].update(session_lifetime=604801),
            "tls.session_lifetime: must be whole seconds from 0 (no resumption) to 604800",
        ),
        (lambda r: r["tls"].update(session_lifetime="1h"), "tls.session_lifetime: must be whole"),
        (lambda r: r.update(mode="magic"), "mode: must be one of transparent, explicit"),
        (lambda r: r["device"].update(mac="zz"), "device.mac: not a MAC address"),
        (lambda r: r["limits"].update(handshake_timeout=-1), "limits.handshake_timeout: must be"),
        (lambda r: r["limits"].update(buffer_size=10), "limits.buffer_size: must be >= 4096"),
        (lambda r: r.update(workers=0), "workers: must be a positive integer"),
        (
            lambda r: r["outbound"][0].update(listen="127.0.0.1:9"),
            "outbound[0].listen: only valid with mode: explicit",
        ),
        (
            lambda r: r["outbound"][1].update(verify={"spki_sha256": "abc"}),
            "outbound[1].verify.spki_sha256: must be 64 hex digits",
        ),
        (
            lambda r: r["outbound"][1].update(verify={"subject": "pacs"}),
            "outbound[1].verify.subject: not a distinguished name",
        ),
        (lambda r: r["outbound"][1].update(plaintext="yes"), "outbound[1].plaintext: must be true"),
        (
            lambda r: r.update(passthrough={"inbound_ports": [0]}),
            "passthrough.inbound_ports[0]: must be a port",
        ),
        (lambda r: r.update(outbound={"a": 1}), "outbound: must be a list"),
        (lambda r: r.pop("identity"), "identity: required key missing"),
    ],
)
def test_invalid_values_name_the_key(mutate, expected):
    raw = raw_example()
    mutate(raw)
    got = problems(raw)
    assert any(p.startswith(expected) for p in got), got


def test_all_problems_reported_at_once():
    raw = raw_example()
    raw["outbound"][0]["port"] = "x"
    raw["inbound"][1]["device_port"] = 0
    raw["logging"]["level"] = "loud"
    assert len(problems(raw)) == 3


def test_plaintext_peer_needs_no_verify_and_warns():
    raw = raw_example()
    raw["outbound"].append(
        {"name": "printer", "address": "198.18.0.40", "port": 9100, "plaintext": True}
    )
    raw["outbound"][0]["profile"] = "aes-legacy"
    cfg = parse_config(raw, Path("/x.yaml"), check_files=False)
    assert cfg.outbound[2].plaintext and cfg.outbound[2].verify is None
    warnings = cfg.warnings()
    assert any("plaintext pass-through to 198.18.0.40:9100" in w for w in warnings)
    assert any("legacy profile 'aes-legacy'" in w for w in warnings)


def test_explicit_mode_requires_listen_and_concrete_device_ip():
    raw = raw_example()
    raw["mode"] = "explicit"
    raw["device"]["ip"] = "auto"
    got = problems(raw)
    assert any(p.startswith("outbound[0].listen: required key missing") for p in got)
    assert any(p.startswith("inbound[0].listen: required key missing") for p in got)
    assert any(p.startswith("device.ip: must be an IP address (not auto)") for p in got)


def test_explicit_mode_listen_parsing_and_collisions():
    raw = raw_example()
    raw["mode"] = "explicit"
    raw["outbound"][0]["listen"] = "127.0.0.1:11104"
    raw["outbound"][1]["listen"] = "127.0.0.1:11104"
    raw["inbound"][0]["listen"] = "[::1]:2762"
    raw["inbound"][1]["listen"] = "localhost:2576"
    got = problems(raw)
    assert got == ["outbound[1].listen: 127.0.0.1:11104 already used by outbound[0]"]
    raw["outbound"][1]["listen"] = "127.0.0.1:nope"
    assert problems(raw)[0].startswith("outbound[1].listen: must be HOST:PORT")


def test_device_auto_in_transparent_mode():
    raw = raw_example()
    raw["device"]["ip"] = "auto"
    cfg = parse_config(raw, Path("/x.yaml"), check_files=False)
    assert cfg.device.ip is None


def test_yaml_errors_and_duplicate_keys_name_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("device:\n  ip: 1.2.3.4\n  ip: 1.2.3.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"{p}:3:3: invalid YAML: duplicate key 'ip'" in str(e.value)
    p.write_text("device: [\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "invalid YAML" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.yaml")
    assert "configuration file not found" in str(e.value)


def test_config_is_frozen():
    cfg = load_config(EXAMPLE, check_files=False)
    with pytest.raises(AttributeError):
        cfg.mode = "explicit"
