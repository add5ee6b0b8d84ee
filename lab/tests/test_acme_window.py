"""The ACME validation window on the real kernel: while `validation_window` is open, TCP from a
validation source to the device's address on 443/80 ends at the box (ports 15443/15080) and never
reaches the device; any other source, or the closed window, behaves exactly as before.

A validation source 198.18.0.40 is added to the pacs namespace (where pebble runs for the
enrollment tests); simple TCP endpoints stand in for the responder (box) and for a server the
device might run on 443/80 (modality). Captures on the device's cable decide.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest
import yaml
from medlab import services as sv
from medlab.net import LAB_DIR, tshark
from medlab.pebble import forget_neighbour
from medtls.interception.spec import ACME_HTTP_PORT, ACME_TLS_ALPN_PORT

VALIDATOR = "198.18.0.40"
HELPER = [sys.executable, "-m", "medlab.acmewindow"]


def _env() -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(LAB_DIR), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def endpoints(env):
    lab = env.lab
    lab.run("pacs", ["ip", "addr", "add", f"{VALIDATOR}/24", "dev", "eth0"])
    procs = []
    try:
        for ns, name, addr, port, extra in (
            ("box", "box-tls", "0.0.0.0", ACME_TLS_ALPN_PORT, ["--transparent"]),
            ("box", "box-http", "0.0.0.0", ACME_HTTP_PORT, ["--transparent"]),
            ("modality", "device-tls", sv.DEVICE_IP, 443, []),
            ("modality", "device-http", sv.DEVICE_IP, 80, []),
        ):
            log = f"acme-{name}.log"
            argv = [*HELPER, "serve", name, addr, str(port), *extra]
            procs.append(lab.spawn(ns, argv, log, env=_env()))
            lab.wait_listen(ns, port, proc=procs[-1], log=log)
        yield
    finally:
        for proc in procs:
            lab.stop(proc)
        lab.run("pacs", ["ip", "addr", "del", f"{VALIDATOR}/24", "dev", "eth0"], check=False)
        forget_neighbour(lab, VALIDATOR)


@contextlib.contextmanager
def window(lab, sources=(VALIDATOR,)):
    log = f"acme-window-{time.monotonic_ns()}.log"
    proc = lab.spawn("box", [*HELPER, "window", *sources], log, env=_env(),
                     stdin=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 15
    while "open " not in lab.log(log):
        assert proc.poll() is None and time.monotonic() < deadline, lab.log(log)
        time.sleep(0.05)
    try:
        yield
    finally:
        proc.stdin.close()
        proc.wait(15)
        assert "closed" in lab.log(log), lab.log(log)


def probe(lab, ns: str, src: str, port: int) -> str:
    argv = [*HELPER, "probe", src, sv.DEVICE_IP, str(port)]
    return lab.run(ns, argv, env={**os.environ, **_env()}, timeout=20).stdout.strip()


def sets(lab) -> str:
    return "".join(
        lab.run("box", ["nft", "list", "set", fam, "medtls", "acme_validators"]).stdout
        for fam in ("bridge", "inet")
    )


def validation_packets(pcap) -> list[str]:
    return tshark(pcap, "tcp.port == 443 or tcp.port == 80")


def test_validation_source_reaches_the_box_and_never_the_device(env, endpoints):
    lab = env.lab
    with lab.capture("modality", "eth0", "acme-window-open.pcap") as device, window(lab):
        assert sets(lab).count(VALIDATOR) == 2
        tls = probe(lab, "pacs", VALIDATOR, 443)
        http = probe(lab, "pacs", VALIDATOR, 80)
    assert tls == f"box-tls {VALIDATOR} {sv.DEVICE_IP}:443", tls
    assert http == f"box-http {VALIDATOR} {sv.DEVICE_IP}:80", http
    assert validation_packets(device) == [], "the device saw a validation connection"
    assert VALIDATOR not in sets(lab), "the window left sources in the sets"


def test_other_sources_are_dropped_as_before_while_the_window_is_open(env, endpoints):
    lab = env.lab
    with lab.capture("modality", "eth0", "acme-window-others.pcap") as device, window(lab):
        results = {
            (who, port): probe(lab, who, ip, port)
            for who, ip in (("mallory", sv.MALLORY_IP), ("pacs", sv.PACS_IP))
            for port in (443, 80)
        }
        control = probe(lab, "pacs", VALIDATOR, 443)
    assert control.startswith("box-tls"), f"control: the validator was not steered: {control}"
    assert all(r.startswith("FAILED") for r in results.values()), results
    assert validation_packets(device) == [], "another source reached the device"
    box_logs = lab.log("acme-box-tls.log") + lab.log("acme-box-http.log")
    assert sv.MALLORY_IP not in box_logs and f"conn {sv.PACS_IP} " not in box_logs


def test_closed_window_drops_the_validation_source_like_any_other(env, endpoints):
    lab = env.lab
    with window(lab):
        pass  # opened and closed: nothing may remain
    with lab.capture("modality", "eth0", "acme-window-closed.pcap") as device:
        results = [probe(lab, "pacs", VALIDATOR, port) for port in (443, 80)]
    assert all(r.startswith("FAILED") for r in results), results
    assert validation_packets(device) == []


def test_window_is_steered_before_passthrough_of_the_same_ports(env, endpoints):
    """With 80/443 passed through to the device, everyone but the validator still reaches the
    device (as before), and the validator reaches the box only while the window is open."""
    lab = env.lab
    cfg = yaml.safe_load(env.config.read_text())
    cfg["passthrough"] = {"inbound_ports": [80, 443]}
    variant = lab.workdir / "acme-passthrough.yaml"
    variant.write_text(yaml.safe_dump(cfg, sort_keys=False))
    sv.apply_rules(lab, variant)
    try:
        with window(lab):
            steered = probe(lab, "pacs", VALIDATOR, 443)
            passed = probe(lab, "mallory", sv.MALLORY_IP, 443)
        after = probe(lab, "pacs", VALIDATOR, 443)
    finally:
        sv.apply_rules(lab, env.config)
    assert steered.startswith("box-tls "), steered
    assert passed == f"device-tls {sv.MALLORY_IP} {sv.DEVICE_IP}:443", passed
    assert after == f"device-tls {VALIDATOR} {sv.DEVICE_IP}:443", after
