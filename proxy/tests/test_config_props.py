"""Property tests of the configuration loader (issue 16): whatever YAML a file holds, the
loader answers with a Config or a ConfigError listing problems, never another exception, and
in bounded time. Values are random documents and mutations of a valid configuration: a wrong
type at every key path, a missing key, an extra key."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from medtls.config import Config, ConfigError, load_config, parse_config

# Upper bound per example (a loader stuck in a loop, not a speed test).
PER_EXAMPLE = 5.0

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["auto", "explicit", "127.0.0.1", "::1", "1.2.3.4:5", "bcp195", "a.pem"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), inner, max_size=4),
    ),
    max_leaves=12,
)

VALID = {
    "device": {"ip": "127.0.0.1", "mac": "02:00:00:00:00:01"},
    "mode": "explicit",
    "identity": {"certificate": "box.crt", "key": "box.key", "ca": "own-ca.pem"},
    "trust": {"ca": "ca.pem", "crl_check": "leaf"},
    "tls": {"profile": "bcp195", "session_lifetime": 0},
    "outbound": [
        {
            "name": "pacs",
            "address": "127.0.0.1",
            "tls_port": 2762,
            "listen": "127.0.0.1:11112",
            "verify": {"cn": "pacs", "dns": "pacs.test", "ca": "pacs-ca.pem"},
            "profile": "bcp195-modified",
            "sni": "pacs.test",
        },
        {
            "name": "his",
            "address": "127.0.0.2",
            "tls_port": 2575,
            "listen": "127.0.0.1:2575",
            "plaintext": True,
        },
    ],
    "inbound": [
        {
            "name": "dicom",
            "listen": "127.0.0.1:2762",
            "device_port": 104,
            "allow": [{"cn": "ris", "ip": "127.0.0.1"}, {"spki_sha256": "ab" * 32}],
            "ca": "ris-ca.pem",
        }
    ],
    "passthrough": {"inbound_ports": [80]},
    "ntp": {"servers": ["192.0.2.1"]},
    "limits": {"max_connections": 10, "handshake_timeout": 5, "idle_timeout": 0},
    "logging": {"level": "info"},
    "workers": 1,
    "clock": {"require_sync": False},
    "metrics": {"enabled": False},
    "audit": {"transport": "none"},
    "control": {"socket": "/run/medtls/c.sock", "watch_files": False},
}
WHERE = Path("/nonexistent/medtls.yaml")


def key_paths(node, prefix=()):
    """Every path to a value inside `node` (dict keys and list indexes)."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in items:
        yield (*prefix, k)
        if isinstance(v, dict | list) and v:
            yield from key_paths(v, (*prefix, k))


PATHS = list(key_paths(VALID))


def container(doc, path):
    for k in path[:-1]:
        doc = doc[k]
    return doc


def answer(raw) -> Config | ConfigError:
    t0 = time.monotonic()
    try:
        result = parse_config(raw, WHERE, check_files=False)
    except ConfigError as e:
        assert e.problems and all(str(p) for p in e.problems)
        result = e
    assert time.monotonic() - t0 < PER_EXAMPLE
    return result


def test_the_valid_document_is_valid():
    assert isinstance(answer(copy.deepcopy(VALID)), Config)


@settings(max_examples=300, deadline=None)
@given(values)
def test_any_document_is_a_config_or_problems(raw):
    answer(raw)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PATHS), values)
def test_a_wrong_value_at_any_key_path_is_a_problem_not_a_crash(path, value):
    doc = copy.deepcopy(VALID)
    container(doc, path)[path[-1]] = value
    answer(doc)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PATHS))
def test_a_missing_key_is_a_problem_not_a_crash(path):
    doc = copy.deepcopy(VALID)
    parent = container(doc, path)
    if isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent.pop(path[-1])
    answer(doc)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([(), *PATHS]), st.text(min_size=1, max_size=10), values)
def test_an_extra_key_is_named(path, key, value):
    doc = copy.deepcopy(VALID)
    target = container(doc, (*path, None)) if path else doc
    if not isinstance(target, dict) or key in target:
        return
    target[key] = value
    result = answer(doc)
    assert isinstance(result, ConfigError)
    assert any("unknown key" in p.message for p in result.problems), result.problems


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(PATHS), values)
def test_through_yaml_text_too(tmp_path, path, value):
    """The whole loader, file to Config: the mutated document as YAML text."""
    doc = copy.deepcopy(VALID)
    container(doc, path)[path[-1]] = value
    f = tmp_path / "medtls.yaml"
    f.write_text(yaml.safe_dump(doc))
    t0 = time.monotonic()
    try:
        load_config(f, check_files=False)
    except ConfigError as e:
        assert e.problems
    assert time.monotonic() - t0 < PER_EXAMPLE


def test_device_not_a_mapping_is_a_problem_naming_the_key():
    """Issue 16 defect 9: `device: true` (or 5) with an inbound entry in explicit mode raised
    a TypeError from the loader."""
    for bad in (True, 5, "x", [1]):
        doc = copy.deepcopy(VALID)
        doc["device"] = bad
        result = answer(doc)
        assert isinstance(result, ConfigError)
        assert [str(p) for p in result.problems if p.path == "device"], result.problems


def test_unhashable_yaml_key_is_a_problem(tmp_path):
    f = tmp_path / "medtls.yaml"
    f.write_text("? [a, b]\n: 1\ndevice: {ip: 127.0.0.1}\n")
    try:
        load_config(f, check_files=False)
    except ConfigError as e:
        assert "invalid YAML" in str(e)
    else:
        raise AssertionError("a list as a mapping key was accepted")
