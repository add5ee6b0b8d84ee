"""ACME validation steering in the interception ruleset: rendering, the window's nft transactions
(with a recorded `nft`), and the sets in a real kernel (scratch namespace, `nft -f`)."""

import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from medtls.config import parse_config
from medtls.interception import host, ruleset, validation_window
from medtls.interception.spec import (
    ACME_HTTP_PORT,
    ACME_TLS_ALPN_PORT,
    InterceptionError,
    spec_from_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ct-modality.yaml"
BR_MAC = "02:00:5e:10:00:b0"
STEER = f"meta pkttype set host ether daddr set {BR_MAC} accept"
PROXY = Path(__file__).resolve().parents[1]
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def spec(**changes):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw.update(changes)
    return spec_from_config(parse_config(raw, EXAMPLE, check_files=False))


def cfg(sources=("198.18.0.40/32",), mode="transparent"):
    return SimpleNamespace(mode=mode, enrollment=SimpleNamespace(validation_sources=list(sources)))


def chain(table: str, name: str) -> list[str]:
    body = table[table.index(f"chain {name} {{") :]
    body = body[: body.index("\n\t}")]
    return [line.strip() for line in body.splitlines()[1:]]


def test_ports_are_the_agreed_ones():
    assert (ACME_TLS_ALPN_PORT, ACME_HTTP_PORT) == (15443, 15080)


@pytest.mark.parametrize("changes", [{}, {"passthrough": {"inbound_ports": [80, 443, 8080]}}])
def test_validators_are_steered_before_every_other_to_device_rule(changes):
    s = spec(**changes)
    bridge = ruleset.bridge_table(s, BR_MAC)
    assert "\tset acme_validators {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}" in bridge
    rules = chain(bridge, "to_device")
    assert rules[0] == f"ip saddr @acme_validators tcp dport {{ 80, 443 }} {STEER}"
    assert all("acme_validators" not in r for r in rules[1:])
    # Passthrough of 80/443 still applies to everyone else (the return comes later).
    if changes:
        assert "tcp dport { 80, 443, 8080 } return" in rules[1:]


def test_validators_are_tproxied_to_the_responder_ports_only():
    inet = ruleset.inet_table(spec())
    assert "\tset acme_validators {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}" in inet
    pre = chain(inet, "prerouting")
    tls = "ip saddr @acme_validators ip daddr 198.18.0.10 tcp dport 443 tproxy ip to :15443"
    http = "ip saddr @acme_validators ip daddr 198.18.0.10 tcp dport 80 tproxy ip to :15080"
    idx = {r: i for i, r in enumerate(pre)}
    tls_i = next(i for r, i in idx.items() if r.startswith(tls))
    http_i = next(i for r, i in idx.items() if r.startswith(http))
    socket_i = next(i for r, i in idx.items() if "socket transparent 1" in r)
    drop_i = next(i for r, i in idx.items() if '"unclaimed" drop' in r)
    inbound_i = next(i for r, i in idx.items() if "tproxy ip to :15002" in r)
    assert socket_i < tls_i < drop_i and socket_i < http_i < drop_i
    assert max(tls_i, http_i) < inbound_i
    assert sum("acme_validators" in r for r in pre) == 2


def test_open_is_one_transaction_replacing_both_sets_and_close_flushes_both():
    text = ruleset.validation_open_script(["198.18.0.40/32", "198.18.0.41", "198.18.0.40/31"])
    assert text.splitlines() == [
        "flush set bridge medtls acme_validators",
        "flush set inet medtls acme_validators",
        "add element bridge medtls acme_validators { 198.18.0.40/31 }",
        "add element inet medtls acme_validators { 198.18.0.40/31 }",
    ]
    assert ruleset.validation_close_script().splitlines() == [
        "flush set bridge medtls acme_validators",
        "flush set inet medtls acme_validators",
    ]


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ([], "validation_sources: empty"),
        (["ca.example"], "validation_sources[0]: not an address or network: 'ca.example'"),
        (["198.18.0.40", "2001:db8::1"], "validation_sources[1]: 2001:db8::1: only IPv4"),
    ],
)
def test_bad_sources_are_refused_naming_the_key(sources, message):
    with pytest.raises(InterceptionError) as err:
        ruleset.validation_open_script(sources)
    assert message in str(err.value)


class RecordedNft:
    def __init__(self, fail_on=None):
        self.scripts = []
        self.fail_on = fail_on

    def __call__(self, argv, stdin=None, check=True):
        assert argv == ["nft", "-f", "-"]
        self.scripts.append(stdin)
        if self.fail_on and self.fail_on in stdin:
            raise InterceptionError("nft -f -: Error: No such file or directory")
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_window_opens_once_and_closes_also_on_an_exception(monkeypatch):
    nft = RecordedNft()
    monkeypatch.setattr(host, "_run", nft)
    with validation_window(cfg(["198.18.0.40/32"])) as sources:
        assert sources == ["198.18.0.40/32"]
        assert len(nft.scripts) == 1 and "add element inet" in nft.scripts[0]
    assert nft.scripts[1] == ruleset.validation_close_script()
    with pytest.raises(RuntimeError, match="order failed"), validation_window(cfg()):
        raise RuntimeError("order failed")
    assert nft.scripts[-1] == ruleset.validation_close_script() and len(nft.scripts) == 4


def test_a_failing_close_does_not_hide_the_orders_error(monkeypatch):
    nft = RecordedNft()
    monkeypatch.setattr(host, "_run", nft)
    with pytest.raises(RuntimeError), validation_window(cfg()):
        nft.fail_on = "flush"
        raise RuntimeError("order failed")
    nft.fail_on = None
    with pytest.raises(InterceptionError), validation_window(cfg()):
        nft.fail_on = "flush"


def test_window_without_the_tables_says_so_and_leaves_nothing(monkeypatch):
    nft = RecordedNft(fail_on="add element")
    monkeypatch.setattr(host, "_run", nft)
    with (
        pytest.raises(InterceptionError, match="are the rules applied"),
        validation_window(cfg()),
    ):
        pytest.fail("the block ran without a window")
    assert nft.scripts[-1] == ruleset.validation_close_script()


def test_explicit_mode_window_does_nothing(monkeypatch):
    nft = RecordedNft()
    monkeypatch.setattr(host, "_run", nft)
    with validation_window(cfg(mode="explicit")) as sources:
        assert sources == []
    assert nft.scripts == []


WINDOW_IN_NS = """
import subprocess, sys
from types import SimpleNamespace
from medtls.interception import validation_window
cfg = SimpleNamespace(mode="transparent",
                      enrollment=SimpleNamespace(validation_sources=sys.argv[1:]))
def show():
    return [subprocess.run(["nft", "list", "set", f, "medtls", "acme_validators"],
                           capture_output=True, text=True, check=True).stdout
            for f in ("bridge", "inet")]
with validation_window(cfg):
    print("OPEN", all(" 198.18.0.40/31 " in x or "198.18.0.40/31" in x for x in show()))
try:
    with validation_window(cfg):
        raise RuntimeError("boom")
except RuntimeError:
    pass
print("CLOSED", all("elements" not in x for x in show()))
"""


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft missing")
def test_window_fills_and_flushes_the_real_sets():
    ns = f"mtacme-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        load = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                              input=ruleset.nft_script(spec(), BR_MAC), capture_output=True,
                              text=True)  # fmt: skip
        assert load.returncode == 0, load.stderr
        r = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", WINDOW_IN_NS,
             "198.18.0.40", "198.18.0.41/32"],
            capture_output=True, text=True, timeout=30,
            env={"PYTHONPATH": str(PROXY), "PATH": PATH},
        )  # fmt: skip
        assert r.stdout.split() == ["OPEN", "True", "CLOSED", "True"], r.stdout + r.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
