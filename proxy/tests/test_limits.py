"""Limits against hostile numbers: file descriptors (RLIMIT_NOFILE, EMFILE at accept) and the
handshake budget (max_handshakes, max_handshakes_per_source) that keeps a flood of unfinished
handshakes from taking the places of authorized peers (issue 16, defects 4 and 5)."""

from __future__ import annotations

import os
import random
import resource
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MEDTLS, EchoServer, Medtls, box_config, echo_once, free_port, write_yaml
from medtls.config import ConfigError, Limits, load_config
from medtls.engine import fdlimit
from test_lifecycle import inbound_config


def _tls_echo(pki, port: int, source: str = "127.0.0.1", host: str = "127.0.0.1") -> bytes:
    """One authorized (box-a) TLS connection from `source`; what came back, b"" if refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pki.ca)
    ctx.load_cert_chain(pki.crt("box-a"), pki.key("box-a"))
    try:
        raw = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
        with ctx.wrap_socket(raw) as t:
            got = echo_once(t, b"ping")
            t.unwrap()  # close_notify: a bare close is a truncation
            return got
    except (OSError, ssl.SSLError):
        return b""


def _hold(port: int, n: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """`n` connections that send the first byte of a TLS record and stop: in the handshake."""
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        s.sendall(b"\x16")
        held.append(s)
    return held


def _wait(pred, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("key", ["max_handshakes", "max_handshakes_per_source"])
@pytest.mark.parametrize("value", [0, -1, "8", True, 1.5])
def test_handshake_limit_keys_must_be_positive_integers(tmp_path, pki, key, value):
    path = write_yaml(tmp_path / "c.yaml", box_config(pki, "box-b", limits={key: value}))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert [str(p) for p in e.value.problems] == [
        f"limits.{key}: must be a positive integer, got {value!r}"
    ]


def test_handshake_limit_defaults(tmp_path, pki):
    cfg = load_config(write_yaml(tmp_path / "c.yaml", box_config(pki, "box-b")))
    assert (cfg.limits.max_handshakes, cfg.limits.max_handshakes_per_source) == (256, 16)
    lim = load_config(write_yaml(tmp_path / "d.yaml", box_config(pki, "box-b", limits={
        "max_handshakes": 8, "max_handshakes_per_source": 2})))  # fmt: skip
    assert (lim.limits.max_handshakes, lim.limits.max_handshakes_per_source) == (8, 2)


def test_descriptor_fit_keeps_within_the_limit():
    lim = Limits(max_connections=1024, max_handshakes=256)
    assert fdlimit.fit(lim, 4096, 4096) == fdlimit.Caps(1024, 256, 16)
    for soft in (1, 33, 64, 100, 1000, 2591):
        caps = fdlimit.fit(lim, soft, soft)
        assert caps.warning and caps.connections >= 1 and caps.handshakes >= 1
        if soft >= 64:
            assert fdlimit.descriptors_needed(caps.connections, caps.handshakes) <= soft
        assert caps.per_source <= caps.handshakes


# ------------------------------------------------------------------ defect 5: handshake budget


def test_handshakes_in_progress_hold_no_connection_slot(pki, run_medtls):
    """Fails before the fix: three unfinished handshakes took the only slot."""
    echo = EchoServer()
    port = free_port()
    b = run_medtls(inbound_config(pki, port, echo.port, limits={"max_connections": 1}), "b",
                   [port])  # fmt: skip
    held = _hold(port, 3)
    try:
        time.sleep(0.2)
        assert _tls_echo(pki, port) == b"ping"
        b.wait_conn("ok", "route=svc")
        assert "result=max_connections" not in b.log()
    finally:
        for s in held:
            s.close()
        echo.close()


def test_handshake_budget_refuses_the_new_handshake(pki, run_medtls):
    """Fails before the fix: no handshake budget (the third connection was served)."""
    echo = EchoServer()
    port = free_port()
    cfg = inbound_config(pki, port, echo.port, limits={"max_handshakes": 2})
    b = run_medtls(cfg, "b", [port])
    held = _hold(port, 2)
    try:
        time.sleep(0.2)
        assert _tls_echo(pki, port) == b""
        b.wait_conn("max_handshakes", 'detail="limits.max_handshakes (2) reached"')
        # the held ones were not evicted: they still are in their handshake
        assert all(f"client=127.0.0.1:{s.getsockname()[1]} " not in b.log() for s in held)
    finally:
        for s in held:
            s.close()
    _wait(lambda: b.log().count("event=connection ") >= 3, "held connections closed")
    assert _tls_echo(pki, port) == b"ping"
    echo.close()


def test_per_source_cap_refuses_that_source_only(pki, run_medtls):
    """Fails before the fix: no per-source limit (3 from one address are all accepted)."""
    echo = EchoServer()
    port = free_port()
    cfg = inbound_config(pki, port, echo.port, limits={"max_handshakes_per_source": 2})
    b = run_medtls(cfg, "b", [port])
    held = _hold(port, 2)
    try:
        time.sleep(1.2)  # stalled: older than listeners.STALLED_HANDSHAKE
        held += _hold(port, 1)  # refused (the daemon resets it)
        line = b.wait_conn("max_handshakes_per_source", "client=127.0.0.1:")
        assert 'detail="limits.max_handshakes_per_source (2) reached: 127.0.0.1"' in line
        # another address, same peer certificate: served
        assert _tls_echo(pki, port, source="127.0.0.2") == b"ping"
        b.wait_conn("ok", "client=127.0.0.2:")
    finally:
        for s in held:
            s.close()
        echo.close()


# ------------------------------------------------------------------ defect 4: descriptors


class LimitedMedtls(Medtls):
    """`medtls run` started with RLIMIT_NOFILE = (soft, hard)."""

    def __init__(self, config: Path, logfile: Path, soft: int, hard: int):
        limit = (soft, hard)
        super().__init__(
            config, logfile, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit)
        )


@pytest.fixture
def limited(tmp_path):
    procs: list[Medtls] = []

    def start(cfg: dict, soft: int, hard: int, ports: list[int]) -> LimitedMedtls:
        path = write_yaml(tmp_path / f"m{len(procs)}.yaml", cfg)
        m = LimitedMedtls(path, tmp_path / f"m{len(procs)}.log", soft, hard)
        procs.append(m)
        m.wait_ready(ports)
        return m

    yield start
    for m in procs:
        m.stop()


def _nofile(pid: int) -> tuple[int, int]:
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


def _check(config: Path, soft: int, hard: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MEDTLS, "check", "--config", str(config)], capture_output=True, text=True,
        timeout=60, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )  # fmt: skip


def test_start_raises_the_soft_limit_as_far_as_needed(pki, limited, echo_server):
    port = free_port()
    cfg = inbound_config(pki, port, echo_server.port, limits={"max_connections": 100})
    m = limited(cfg, 64, 4096, [port])
    assert _nofile(m.proc.pid) == (2 * (100 + 256) + fdlimit.RESERVE, 4096)
    assert "RLIMIT_NOFILE" not in m.log()
    assert _tls_echo(pki, port) == b"ping"


def test_start_check_names_both_numbers_and_the_key(pki, limited, echo_server, tmp_path):
    """A hard limit below what max_connections needs: the daemon serves what fits and says so
    (and `medtls check` says the same in an environment with that limit)."""
    port = free_port()
    cfg = inbound_config(pki, port, echo_server.port)  # max_connections 1024 by default
    m = limited(cfg, 64, 64, [port])
    expected = (
        "limits.max_connections (1024) and limits.max_handshakes (256) need 2592 file "
        "descriptors, but RLIMIT_NOFILE is 64 (hard limit 64): serving at most 12 connections "
        "and 4 handshakes; raise LimitNOFILE= of the service to 2592 or lower "
        "limits.max_connections"
    )
    assert f"WARNING {expected}\n" in m.log()
    assert _tls_echo(pki, port) == b"ping"
    r = _check(m.config, 64, 64)
    assert f"warning: {expected}\n" in r.stderr, r.stderr
    r = _check(m.config, 1024, 4096)
    assert "RLIMIT_NOFILE" not in r.stderr, r.stderr


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_pauses_accept_without_spinning(pki, limited, echo_server):
    """Fails before the fix: at EMFILE the listener stayed readable, the loop spun at 100 % CPU
    and logged every failed accept.

    The start check keeps a daemon within its own limit, so the limit is lowered under the
    running process (as when descriptors run out for another reason, or ENFILE)."""
    port = free_port()
    cfg = inbound_config(pki, port, echo_server.port, limits={"max_connections": 8,
                                                              "max_handshakes": 4})  # fmt: skip
    m = limited(cfg, 256, 256, [port])
    pid = m.proc.pid
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 2, 256))
    held = _hold(port, 2)  # accepted: the last two descriptors
    _wait(lambda: len(os.listdir(f"/proc/{pid}/fd")) == in_use + 2, "two connections accepted")
    waiting = _hold(port, 20)  # complete in the kernel, not accepted: EMFILE
    m.wait_log("accept on svc failed: Too many open files")
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    time.sleep(3)
    cpu = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    lines = [x for x in m.log().splitlines() if "accept on svc failed" in x]
    assert cpu < 0.3, f"{cpu:.0%} of a core while out of descriptors"
    assert 1 <= len(lines) < 20, len(lines)
    assert m.proc.poll() is None
    for s in held + waiting:
        s.close()
    # The descriptors come back; the paused listener is armed again and serves.
    deadline = time.monotonic() + 15
    while _tls_echo(pki, port) != b"ping":
        assert time.monotonic() < deadline, m.log()[-3000:]
        time.sleep(0.2)


# ------------------------------------------------------------------ defect 5, for real


FLOOD = r"""
import socket, sys, time
host, port, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
n, seconds, hold = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
held, opened, t0 = [], 0, time.monotonic()
while opened < n and time.monotonic() - t0 < seconds:
    try:
        s = socket.create_connection((host, port), timeout=2, source_address=(src, 0))
        s.sendall(b"\x16")
        held.append(s)
    except OSError:
        pass
    opened += 1
    if opened % 20 == 0:
        print(opened, flush=True)
    time.sleep(seconds / n / 2)
print("done", opened, flush=True)
time.sleep(max(0.0, hold - (time.monotonic() - t0)))
"""

DEVICE = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from conftest import EchoServer
print(EchoServer().port, flush=True)
time.sleep(120)
"""

PEER = r"""
import socket, ssl, sys, time
host, port, ca, crt, key, n = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6], int(sys.argv[6])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.load_verify_locations(ca)
ctx.load_cert_chain(crt, key)
for i in range(n):
    payload = b"attempt %d" % i
    try:
        with ctx.wrap_socket(socket.create_connection((host, port), timeout=10)) as t:
            t.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = t.recv(100)
                if not chunk:
                    break
                got += chunk
            t.unwrap()
        print("ok" if got == payload else "short %r" % got, flush=True)
    except (OSError, ssl.SSLError) as e:
        print("failed", type(e).__name__, e, flush=True)
    time.sleep(0.1)
"""


def _sh(*cmds: str) -> None:
    for c in cmds:
        subprocess.run(c, shell=True, check=True, capture_output=True)


@pytest.fixture
def flood_lab(tmp_path):
    """box (198.18.N.1 toward mallory, 198.19.N.1 toward the peer) -- mallory (198.18.N.66)
    and -- peer (198.19.N.20), each namespace behind its own veth pair."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    n = random.randint(100, 250)
    tag = f"ml{os.getpid() % 10000}{n}"
    ns = {k: f"{tag}{k}" for k in ("box", "mal", "peer")}
    procs: list[subprocess.Popen] = []
    try:
        _sh(*[f"ip netns add {v}" for v in ns.values()])
        b, mal, peer = (f"ip netns exec {ns[k]} " for k in ("box", "mal", "peer"))
        _sh(
            f"ip link add {tag}m type veth peer name {tag}bm",
            f"ip link add {tag}p type veth peer name {tag}bp",
            f"ip link set {tag}m netns {ns['mal']}", f"ip link set {tag}bm netns {ns['box']}",
            f"ip link set {tag}p netns {ns['peer']}", f"ip link set {tag}bp netns {ns['box']}",
            b + "ip link set lo up",
            b + f"ip addr add 198.18.{n}.1/24 dev {tag}bm", b + f"ip link set {tag}bm up",
            b + f"ip addr add 198.19.{n}.1/24 dev {tag}bp", b + f"ip link set {tag}bp up",
            mal + "ip link set lo up",
            mal + f"ip addr add 198.18.{n}.66/24 dev {tag}m", mal + f"ip link set {tag}m up",
            peer + "ip link set lo up",
            peer + f"ip addr add 198.19.{n}.20/24 dev {tag}p", peer + f"ip link set {tag}p up",
            peer + f"ip route add default via 198.19.{n}.1",
        )  # fmt: skip

        def spawn(name: str, *args: str, log: Path) -> subprocess.Popen:
            with open(log, "wb") as fh:
                p = subprocess.Popen(["ip", "netns", "exec", ns[name], *args], stdout=fh,
                                     stderr=subprocess.STDOUT)  # fmt: skip
            procs.append(p)
            return p

        yield {"ns": ns, "spawn": spawn, "box_ip": f"198.18.{n}.1",
               "mallory": f"198.18.{n}.66", "peer": f"198.19.{n}.20"}  # fmt: skip
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for v in ns.values():
            subprocess.run(["ip", "netns", "del", v], capture_output=True)


def test_flood_from_one_address_does_not_starve_authorized_peer(pki, flood_lab, tmp_path):
    """Mallory opens up to 200 connections in at most 5 s, each sending one byte of a TLS record
    and holding it; meanwhile the authorized peer connects 12 times: every attempt is relayed
    end to end. Fails before the fix: the flood's handshakes filled max_connections."""
    lab, t, py = flood_lab, tmp_path, sys.executable
    (t / "flood.py").write_text(FLOOD)
    (t / "peer.py").write_text(PEER)
    (t / "echo.py").write_text(DEVICE)
    lab["spawn"]("box", py, str(t / "echo.py"), str(Path(__file__).parent), log=t / "echo.log")
    _wait(lambda: (t / "echo.log").read_text().strip().isdigit(), "echo server up")
    echo_port = int((t / "echo.log").read_text())
    port = 2762
    # max_connections below the flood's size: before the fix, its handshakes filled it
    cfg = box_config(pki, "box-b", inbound=[{
        "name": "dicom", "listen": f"{lab['box_ip']}:{port}", "device_port": echo_port,
        "allow": [{"cn": "box-a"}]}], limits={"max_connections": 64})  # fmt: skip
    conf = write_yaml(t / "box.yaml", cfg)
    box_log = t / "box.log"
    box = lab["spawn"]("box", py, "-m", "medtls.cli", "run", "--config", str(conf), log=box_log)
    _wait(lambda: "listening dicom" in box_log.read_text(), "box listening")
    flood = lab["spawn"]("mal", py, str(t / "flood.py"), lab["box_ip"], str(port),
                         lab["mallory"], "200", "5", "12", log=t / "flood.log")  # fmt: skip
    # the peer starts once the flood holds more handshakes than max_connections
    _wait(lambda: any(x.strip().isdigit() and int(x) >= 80
                      for x in (t / "flood.log").read_text().split()), "flood running")  # fmt: skip
    r = subprocess.run(
        ["ip", "netns", "exec", lab["ns"]["peer"], py, str(t / "peer.py"), lab["box_ip"],
         str(port), str(pki.ca), str(pki.crt("box-a")), str(pki.key("box-a")), "12"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    flood_out = (t / "flood.log").read_text()
    assert flood.poll() is None, flood_out  # the flood was still holding its connections
    results = r.stdout.split("\n")[:-1]
    log = box_log.read_text()
    assert results == ["ok"] * 12, (r.stdout, r.stderr, log[-4000:])
    assert box.poll() is None
    lines = [x for x in log.splitlines() if "event=connection " in x]
    peer_lines = [x for x in lines if f"client={lab['peer']}:" in x]
    assert len(peer_lines) == 12 and all(" result=ok " in x for x in peer_lines), log[-4000:]
    refused = [x for x in lines if f"client={lab['mallory']}:" in x
               and " result=max_handshakes_per_source " in x]  # fmt: skip
    assert refused, log[-4000:]
