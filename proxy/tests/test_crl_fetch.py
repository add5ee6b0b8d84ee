"""`medtls crl-fetch`: a fetched CRL replaces its CA's installed CRL only when it is signed by
that CA, fresh, complete and not older; anything else leaves trust.crl as it was."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import box_config, write_yaml
from crl_util import CrlServer, make_crl, pem
from hypothesis import given, settings
from hypothesis import strategies as st
from medtls.config import load_config
from medtls.core.crlparse import pem_crls
from medtls.core.crlstate import read_state, summary
from medtls.enroll import crl as crlfetch
from medtls.enroll.crl import CrlMeta, judge, merge

PROXY = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000.0


def meta(ca="A", number=1, this=-60, nxt=3600, der=None):
    der = der if der is not None else f"{ca}{number}{this}{nxt}".encode()
    return CrlMeta(ca, ca, number, NOW + this, None if nxt is None else NOW + nxt, der)


@pytest.mark.parametrize(
    ("new", "current", "why"),
    [
        (meta(number=2), meta(number=1), None),
        (meta(number=1), None, None),
        (meta(number=1), meta(number=2), "rollback: CRL number 1 is lower than the installed 2"),
        (meta(number=None), meta(number=2), "no CRL number"),
        (meta(number=2, nxt=-1), meta(number=1), "stale"),
        (meta(number=2, nxt=None), None, "no nextUpdate"),
        (meta(number=2, this=3600, nxt=7200), None, "in the future"),
        (meta(number=2, this=200), None, None),  # within the clock skew
        (meta(number=None, this=-100), meta(number=None, this=-50), "rollback: thisUpdate"),
        (meta(number=1, der=b"x"), meta(number=1, der=b"y"), "other content"),
    ],
)
def test_judge(new, current, why):
    got = judge(new, current, NOW)
    assert (got is None) if why is None else (got is not None and why in got), got


def test_merge_replaces_per_ca_keeps_order_and_others():
    a1, b1, c1 = meta("A", 1), meta("B", 1), meta("C", 1)
    a2, d1 = meta("A", 2), meta("D", 1)
    assert merge([a1, b1, c1], [a2, d1]) == [a2, b1, c1, d1]
    assert merge([a1, a1, b1], [a2]) == [a2, b1]
    assert merge([], []) == []


CANDIDATE = st.tuples(
    st.sampled_from("ABC"),
    st.one_of(st.none(), st.integers(0, 5)),
    st.integers(-7200, 7200),
    st.one_of(st.none(), st.integers(-7200, 7200)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(CANDIDATE, max_size=12), st.lists(st.sampled_from("ABC"), unique=True))
def test_installed_crls_never_roll_back_or_go_stale(candidates, initial):
    bundle = [meta(ca, 1) for ca in initial]
    for ca, number, this, nxt in candidates:
        new = meta(ca, number, this, None if nxt is None else this + nxt)
        old = next((m for m in bundle if m.ca == ca), None)
        if judge(new, old, NOW) is None:
            before = {m.ca: m for m in bundle}
            bundle = merge(bundle, [new])
            assert new in bundle
            assert new.next_update is not None and new.next_update > NOW
            assert new.this_update <= NOW + crlfetch.CLOCK_SKEW
            if old is not None and old.number is not None:
                assert new.number is not None and new.number >= old.number
            assert {m.ca: m for m in bundle if m.ca != ca} == {
                k: v for k, v in before.items() if k != ca
            }
        cas = [m.ca for m in bundle]
        assert len(cas) == len(set(cas))


# --------------------------------------------------------------------------- against a server


@pytest.fixture
def server():
    s = CrlServer()
    yield s
    s.close()


@pytest.fixture
def fetcher(pki, tmp_path, server):
    """A configuration of box-b whose trust.crl holds inter #1 and root #1, fetching /inter and
    /root from the server; returns (config path, trust.crl path, state path)."""
    crl = tmp_path / "crl.pem"
    crl.write_bytes(pem(make_crl(pki.inter, number=1), make_crl(pki.root, number=1)))
    state = tmp_path / "state.json"
    cfg = box_config(
        pki, "box-b", trust={"ca": str(pki.ca), "crl": str(crl)},
        crl_fetch={"urls": [server.url("/inter"), server.url("/root")], "timeout": 5,
                   "max_bytes": 20000, "state_file": str(state)},
    )  # fmt: skip
    return write_yaml(tmp_path / "box.yaml", cfg), crl, state


def _serials(crl_path: Path) -> list[set[int]]:
    from cryptography import x509

    return [
        {r.serial_number for r in x509.load_der_x509_crl(d)}
        for d in pem_crls(crl_path.read_bytes())
    ]


def test_new_crl_installed_other_ca_kept(pki, server, fetcher):
    conf, crl, state_path = fetcher
    old_root = pem_crls(crl.read_bytes())[1]
    server.files["/inter"] = make_crl(pki.inter, [pki.leaves["box-a"].cert], number=2)
    state = crlfetch.fetch_once(load_config(conf))
    assert [u.result for u in state.urls] == ["installed", "failed"]  # /root: 404
    assert "HTTP 404" in state.urls[1].detail
    ders = pem_crls(crl.read_bytes())
    assert ders[1] == old_root  # the root's fetch failed: its CRL stays
    assert _serials(crl)[0] == {pki.leaves["box-a"].cert.serial_number}
    assert read_state(state_path) == state
    assert "1/2 URLs ok" in summary(state) and "HTTP 404" in summary(state)
    # the same CRL again: unchanged, nothing rewritten
    server.files["/root"] = old_root
    mtime = crl.stat().st_mtime_ns
    state = crlfetch.fetch_once(load_config(conf))
    assert [u.result for u in state.urls] == ["unchanged", "unchanged"]
    assert state.ok and crl.stat().st_mtime_ns == mtime


def _bad(pki):
    box_a = [pki.leaves["box-a"].cert]
    good = make_crl(pki.inter, box_a, number=3)
    return {
        "forged": (make_crl(pki.inter, number=3, key=pki.rogue.key), "does not verify"),
        "rogue issuer": (make_crl(pki.rogue, number=3), "none of the configured CAs"),
        "stale": (make_crl(pki.inter, number=3, this=-7200, nxt=-60), "stale"),
        "future": (make_crl(pki.inter, number=3, this=3600, nxt=7200), "in the future"),
        "rollback": (make_crl(pki.inter, number=1, this=0), "rollback"),
        "delta": (make_crl(pki.inter, number=3, delta=True), "delta CRL"),
        "truncated": (good[:-20], "truncated"),
        "cut transfer": (good, "truncated transfer"),
        "garbage": (b"\x30\x03abc", "malformed"),
        "two in one": (pem(good, good), "2 CRLs"),
        "oversized": (good + b"\0" * 20000, "max_bytes"),
    }


@pytest.mark.parametrize(
    "case", ["forged", "rogue issuer", "stale", "future", "rollback", "delta", "truncated",
             "cut transfer", "garbage", "two in one", "oversized"],
)  # fmt: skip
def test_bad_crl_never_replaces_the_good_one(pki, server, fetcher, case):
    conf, crl, _ = fetcher
    server.files["/inter"] = make_crl(pki.inter, [pki.leaves["box-a"].cert], number=2)
    server.files["/root"] = make_crl(pki.root, number=2)
    assert crlfetch.fetch_once(load_config(conf)).ok
    good = crl.read_bytes()
    body, why = _bad(pki)[case]
    server.files["/inter"] = body
    if case == "cut transfer":
        server.lie["/inter"] = 20
    state = crlfetch.fetch_once(load_config(conf))
    assert state.urls[0].result in ("refused", "failed") and why in state.urls[0].detail, state
    assert crl.read_bytes() == good
    assert _serials(crl)[0] == {pki.leaves["box-a"].cert.serial_number}  # still revoked


def test_bundle_refused_by_the_one_validation_keeps_the_installed(pki, server, fetcher,
                                                                  monkeypatch):  # fmt: skip
    from medtls.tls.context import TLSSetupError

    conf, crl, _ = fetcher
    before = crl.read_bytes()

    def refuse(cfg, generation=0):
        assert cfg.trust_crl != crl  # a candidate, not the installed file
        raise TLSSetupError("trust.crl: refused for the test")

    monkeypatch.setattr("medtls.tls.material.validate", refuse)
    server.files["/inter"] = make_crl(pki.inter, number=2)
    state = crlfetch.fetch_once(load_config(conf))
    assert not state.ok and "refused for the test" in state.errors[0]
    assert state.urls[0].result == "refused"
    assert crl.read_bytes() == before
    assert not [p for p in crl.parent.iterdir() if p.name.startswith(".crl.pem.")]


def test_distribution_points_of_the_configured_certificates(pki, tmp_path):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DP CA")])
    dp = x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                [
                    x509.UniformResourceIdentifier("ldap://x/cn=y"),
                    x509.UniformResourceIdentifier("http://198.18.0.5/root.crl"),
                ],
                None,
                None,
                None,
            )
        ]
    )
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(pki.root.cert.subject)
            .public_key(pki.root.key.public_key()).serial_number(7)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(True, None), True)
            .add_extension(dp, False).sign(pki.root.key, hashes.SHA256()))  # fmt: skip
    from cryptography.hazmat.primitives.serialization import Encoding

    ca = tmp_path / "route-ca.pem"
    ca.write_bytes(cert.public_bytes(Encoding.PEM))
    crl = tmp_path / "crl.pem"
    crl.write_bytes(pem(make_crl(pki.inter)))
    route = {"name": "p", "address": "127.0.0.1", "listen": "127.0.0.1:1", "port": 104,
             "verify": {"cn": "pacs", "ca": str(ca)}}  # fmt: skip
    cfg = box_config(pki, "box-b", trust={"ca": str(pki.ca), "crl": str(crl)}, crl_fetch={},
                     outbound=[route])  # fmt: skip
    config = load_config(write_yaml(tmp_path / "c.yaml", cfg))
    assert crlfetch.distribution_points(config) == ["http://198.18.0.5/root.crl"]
    assert config.crl_fetch.urls == ()


def test_crl_fetch_requires_trust_crl(pki, tmp_path):
    from medtls.config import ConfigError

    cfg = box_config(pki, "box-b", crl_fetch={"urls": ["http://198.18.0.5/x.crl"]})
    with pytest.raises(ConfigError, match=r"crl_fetch: requires trust\.crl"):
        load_config(write_yaml(tmp_path / "c.yaml", cfg))
    cfg["crl_fetch"] = {"urls": ["https://198.18.0.5/x.crl"]}
    with pytest.raises(ConfigError, match=r"crl_fetch.urls\[0\]: must be an http:// URL"):
        load_config(write_yaml(tmp_path / "c.yaml", cfg))


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="needs Debian's python3")
def test_cli_under_the_system_python(pki, server, fetcher):
    conf, _, _ = fetcher
    env = {**os.environ, "PYTHONPATH": str(PROXY)}
    cmd = ["/usr/bin/python3", "-m", "medtls.cli", "crl-fetch", "--config", str(conf), "--json"]
    server.files["/inter"] = make_crl(pki.inter, [pki.leaves["box-a"].cert], number=2)
    server.files["/root"] = make_crl(pki.root, number=2)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [u["result"] for u in out["urls"]] == ["installed", "installed"]
    assert out["reload"] == "not running"
    server.files["/root"] = make_crl(pki.root, number=2, nxt=-1)
    r = subprocess.run(cmd[:-1], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and "stale" in r.stdout, r.stdout + r.stderr
    bad = conf.parent / "bad.yaml"
    bad.write_text(conf.read_text().replace("crl_fetch:", "crl_fetch_typo:"))
    r = subprocess.run([*cmd[:4], "--config", str(bad)], capture_output=True, text=True,
                       env=env, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "crl_fetch_typo" in r.stderr


# --------------------------------------------------------------------------- hostile input

from medtls.core.crlstate import CrlFetchState, StateError, UrlResult, parse_state  # noqa: E402

TEXT = st.text(max_size=40)
STATES = st.builds(
    CrlFetchState,
    st.floats(0, 4e9),
    st.lists(
        st.builds(UrlResult, TEXT, st.sampled_from(["installed", "unchanged", "refused", "failed"]),
                  TEXT, st.one_of(st.none(), st.floats(0, 4e9))),
        max_size=4,
    ).map(tuple),
    st.one_of(st.none(), st.floats(0, 4e9)),
    TEXT,
    st.lists(TEXT, max_size=3).map(tuple),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(STATES)
def test_state_round_trips(tmp_path_factory, state):
    from medtls.core.crlstate import read_state, write_state

    path = tmp_path_factory.mktemp("state") / "s.json"
    write_state(path, state)
    assert read_state(path) == state
    assert summary(state).startswith("crl fetch: last ")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(["last_fetch", "urls", "errors", "reload",
                                                  "next_update"]), JSON).map(
                     lambda v: json.dumps(v).encode())))  # fmt: skip
def test_a_hostile_state_file_is_a_state_or_a_clear_error(data):
    try:
        state = parse_state(data)
    except StateError as e:
        assert str(e)
    else:
        assert isinstance(summary(state), str)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 400))
def test_a_hostile_body_is_a_crl_of_a_ca_or_refused(pki, noise, cut):
    signed = make_crl(pki.inter, number=5)
    cas = [pki.inter.cert, pki.root.cert]
    for body in (noise, signed[:cut] + noise, b"-----BEGIN X509 CRL-----\n" + noise):
        try:
            got = crlfetch.examine(crlfetch.one_der(body), cas)
        except crlfetch.CrlRejected as e:
            assert str(e)
        else:
            assert got.der == body or body.startswith(b"-----")
            assert got.issuer == pki.inter.cert.subject.rfc4514_string()
