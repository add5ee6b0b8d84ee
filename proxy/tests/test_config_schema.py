"""The configuration schema (medtls.config.schema) against everything that describes the file:
the generated JSON Schema, the key tables of docs/configuration.md, the proxy role and the
example/inventory configurations. One set of keys and defaults, checked everywhere."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from medtls.config import ConfigError, load_config, parse_config
from medtls.config.ops import parse_ops_sections
from medtls.config.schema import SCHEMA, Key, ListOf, Section, json_text

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"


def _walk(section: Section, prefix: str = ""):
    for key in section.keys.values():
        path = f"{prefix}{key.name}"
        yield path, key
        inner = key.type.item if isinstance(key.type, ListOf) else key.type
        if isinstance(inner, Section):
            yield from _walk(inner, path + ".")


def _section_at(path: str) -> Section | None:
    section = SCHEMA
    for name in filter(None, path.split(".")):
        key = section.keys.get(name)
        if key is None:
            return None
        section = key.type.item if isinstance(key.type, ListOf) else key.type
    return section if isinstance(section, Section) else None


def _doc_tables() -> dict[str, dict[str, str | None]]:
    """{section path: {key: Default cell or None}} from every `| Key |` table of the doc, the
    section named by the first `backticked` word of the heading above it (`outbound[].verify`)."""
    tables: dict[str, dict[str, str | None]] = {}
    section, columns = None, None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            m = re.search(r"`([a-z_.\[\]]+)`", line)
            section = "" if "Top level" in line else (m.group(1).replace("[]", "") if m else None)
            columns = None
            continue
        if not line.startswith("|"):
            columns = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if columns is None:
            columns = cells
            continue
        if set(line) <= set("|-: ") or section is None or columns[0] != "Key":
            continue
        key = re.fullmatch(r"`([a-z_0-9]+)`", cells[0])
        assert key, f"{DOC.name}: row {line[:60]!r} does not start with a `key`"
        default = cells[columns.index("Default")] if "Default" in columns else None
        tables.setdefault(section, {})[key.group(1)] = default
    return tables


def _shown(key: Key) -> str | None:
    """The Default cell the doc must start with; None: any text that names no value."""
    if key.required:
        return "required"
    if key.shown:
        return f"`{key.shown}`"
    d = key.default
    if d is None or d == "":
        return None
    if isinstance(d, bool):
        return f"`{str(d).lower()}`"
    if isinstance(d, tuple):
        return f"`[{', '.join(map(str, d))}]`"
    return f"`{d}`"


def test_json_schema_is_generated_from_the_schema():
    committed = (ROOT / "docs" / "medtls.schema.json").read_text(encoding="utf-8")
    assert committed == json_text(), "run: python -m medtls.config --json > docs/medtls.schema.json"
    out = subprocess.run(
        [sys.executable, "-m", "medtls.config", "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT / "proxy",
    )  # fmt: skip
    assert out.stdout == committed


def test_every_schema_key_is_in_the_doc_with_its_default():
    tables = _doc_tables()
    for path, key in _walk(SCHEMA):
        parent, _, name = path.rpartition(".")
        assert parent in tables, f"{DOC.name}: no key table for `{parent}` (key {path})"
        assert name in tables[parent], f"{DOC.name}: `{path}` missing from the `{parent}` table"
        cell = tables[parent][name]
        if cell is None or isinstance(key.type, Section):
            continue
        want = _shown(key)
        if want is None:
            assert not cell.startswith("`"), f"{path}: doc default {cell!r}, the schema has none"
        else:
            assert cell.startswith(want), f"{path}: doc default {cell!r}, schema {want!r}"


def test_no_doc_row_names_an_unknown_key():
    for section, rows in _doc_tables().items():
        known = _section_at(section)
        assert known is not None, f"{DOC.name}: table for unknown section `{section}`"
        unknown = set(rows) - set(known.keys)
        assert not unknown, f"{DOC.name}: `{section}` table names unknown keys {sorted(unknown)}"


def test_proxy_role_defaults_match_the_schema():
    text = (ROOT / "roles" / "proxy" / "defaults" / "main.yml").read_text(encoding="utf-8")
    used = re.findall(r"medtls_proxy_config_limits\.(\w+) \| default\((\d+)\)", text)
    assert used, "the role sizes LimitNOFILE= from limits.* defaults"
    for name, value in used:
        assert SCHEMA.keys["limits"].type.keys[name].default == int(value), name


def test_certificates_role_leaves_crl_fetch_state_file_to_the_schema_default():
    """The role creates and unlocks (ReadWritePaths) the directory of the schema's default and
    renders no state_file of its own: one fact, and the root fetch can write where it reports."""
    role = ROOT / "roles" / "certificates"
    role_vars = yaml.safe_load((role / "vars" / "main.yml").read_text(encoding="utf-8"))
    default = SCHEMA.keys["crl_fetch"].type.keys["state_file"].default
    assert str(Path(default).parent) == role_vars["medtls_certificates_crl_fetch_state_dir"]
    assert "state_file" not in role_vars["medtls_certificates_config_sections"]
    assert "medtls_certificates_crl_fetch_state_dir" not in (
        role / "defaults" / "main.yml"
    ).read_text(encoding="utf-8")


def _untemplated(value, key=""):
    """A role variable's config with its Jinja expressions replaced by plausible values."""
    if isinstance(value, dict):
        return {k: _untemplated(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_untemplated(v, key) for v in value]
    if isinstance(value, str) and "{{" in value:
        return "198.18.0.10" if key in ("ip", "address") else "x"
    return value


_ROLE_VARS = [
    *ROOT.glob("ansible/inventories/*/group_vars/*.yml"),
    ROOT / "molecule" / "shared" / "vars.yml",
]
INVENTORIES = sorted(
    p for p in _ROLE_VARS
    if isinstance((yaml.safe_load(p.read_text()) or {}).get("medtls_proxy_config"), dict)
)  # fmt: skip


@pytest.mark.parametrize("path", INVENTORIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_role_configurations_validate(path):
    raw = _untemplated(yaml.safe_load(path.read_text())["medtls_proxy_config"])
    parse_config(raw, Path("/etc/medtls/medtls.yaml"), check_files=False)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_load(path):
    load_config(path, check_files=False)


# ------------------------------------------------------------------ one rule for every key


BASE = {"device": {"ip": "198.18.0.10"}, "identity": {"certificate": "c.pem", "key": "k.pem"},
        "trust": {"ca": "ca.pem"}}  # fmt: skip


def test_relative_paths_resolve_against_the_config_dir_for_every_path_key():
    raw = {**BASE, "audit": {"transport": "tls", "host": "arr", "ca": "arr-ca.pem",
                             "spool": "state/audit.spool"},
           "control": {"socket": "run/control.sock"}, "clock": {"sync_file": "synced"}}  # fmt: skip
    cfg = parse_config(raw, Path("/etc/medtls/medtls.yaml"), check_files=False)
    assert cfg.trust_ca == Path("/etc/medtls/ca.pem")
    assert cfg.identity.certificate == Path("/etc/medtls/c.pem")
    assert cfg.ops.audit.ca == "/etc/medtls/arr-ca.pem"
    assert cfg.ops.audit.spool == "/etc/medtls/state/audit.spool"
    assert cfg.ops.control.socket == "/etc/medtls/run/control.sock"
    assert cfg.ops.clock.sync_file == "/etc/medtls/synced"
    # without a file to resolve against (parse_ops_sections alone), relative is an error
    _, problems = parse_ops_sections({"control": {"socket": "run/control.sock"}})
    assert problems == [("control.socket", "must be an absolute path, got 'run/control.sock'")]
    ops, problems = parse_ops_sections({"control": {"socket": "c.sock"}}, Path("/etc/medtls"))
    assert problems == [] and ops.control.socket == "/etc/medtls/c.sock"


def test_localhost_and_ports_are_read_alike_in_listen_and_metrics():
    raw = {**BASE, "mode": "explicit", "metrics": {"listen": "localhost:9100"},
           "outbound": [{"name": "p", "address": "127.0.0.1", "listen": "localhost:11104",
                         "tls_port": 2762, "verify": {"cn": "p"}}]}  # fmt: skip
    cfg = parse_config(raw, Path("/etc/medtls/medtls.yaml"), check_files=False)
    assert (cfg.ops.metrics.host, cfg.ops.metrics.port) == ("127.0.0.1", 9100)
    assert str(cfg.outbound[0].listen) == "127.0.0.1:11104"
    # a port is a YAML integer everywhere: a quoted "9750" is refused by every port key
    for section, key in (("listeners", "outbound"), ("audit", "port")):
        with pytest.raises(ConfigError) as e:
            parse_config({**BASE, section: {key: "9750"}}, Path("/x/m.yaml"), check_files=False)
        assert [str(p) for p in e.value.problems] == [
            f"{section}.{key}: must be a port number 1-65535, got '9750'"
        ]


def test_problems_carry_the_full_key_path():
    raw = {**BASE, "inbound": [{"name": "ris", "port": 2762, "allow": [{"cn": "a"}, {"cn": 7}]}]}
    with pytest.raises(ConfigError) as e:
        parse_config(raw, Path("/x/m.yaml"), check_files=False)
    assert [p.path for p in e.value.problems] == ["inbound[0].allow[1].cn"]
    assert "must be a non-empty string" in e.value.problems[0].message
