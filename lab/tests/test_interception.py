"""The interception ruleset on the real kernel: fail closed, invisible, IPv6, learning, teardown."""

from __future__ import annotations

import subprocess
import sys
import time

import yaml
from medlab import services as sv
from medlab.net import LAB_DIR, tshark

BOX_CLIENT = """
import socket, ssl, sys
s = socket.socket(); s.setsockopt(socket.SOL_IP, 19, 1)   # IP_TRANSPARENT
s.bind(("198.18.0.10", 0)); s.settimeout(10); s.connect(("198.18.0.30", 2575))
ctx = ssl.create_default_context(cafile=sys.argv[3]); ctx.check_hostname = False
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
t = ctx.wrap_socket(s)
t.sendall(b"\\x0bMSH|^~\\\\&|BOX|MEDTLS|HIS|H|20260101||ADT^A01|BOX1|P|2.5\\r\\x1c\\r")
print(t.recv(4096)); print("local", t.getsockname())
"""


def test_fail_closed_while_medtls_stopped_or_restarting(env, dicom):
    lab = env.lab
    path, _ = dicom
    env.stop_medtls()
    with lab.capture("mallory", "box", "stopped.pcap") as pcap:
        start = time.monotonic()
        r = sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, check=False)
        refused_in = time.monotonic() - start
        assert r.returncode != 0, "C-ECHO succeeded with medtls stopped"
        r = sv.store(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, path, check=False)
        assert r.returncode != 0
        # Restart while the device keeps dialling: nothing may slip out in between.
        dialer = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns("modality"), "bash", "-c",
             "for i in $(seq 40); do echo x | timeout 1 socat -u - "
             "TCP:198.18.0.20:104,connect-timeout=1 2>/dev/null; sleep 0.05; done"],
        )  # fmt: skip
        try:
            env.start_medtls()
        finally:
            dialer.wait(60)
        sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET)
    assert refused_in < 5, f"the device waited {refused_in:.1f}s instead of being refused"
    leaked = tshark(pcap, "ip.src == 198.18.0.10 and tcp and not tcp.port == 2762")
    assert leaked == [], f"device TCP left the box in plaintext: {leaked[:3]}"
    assert tshark(pcap, "tls.handshake.type == 1"), "control: the restarted medtls sent no TLS"


def test_box_is_invisible_and_non_tcp_crosses(env):
    lab = env.lab
    out = lab.run("box", ["ip", "-4", "-o", "addr", "show"]).stdout
    assert [line for line in out.splitlines() if " lo " not in line] == []
    with lab.capture("mallory", "box", "invisible.pcap") as pcap:
        lab.run("pacs", ["ip", "neigh", "flush", "dev", "eth0"])
        lab.run("modality", ["ping", "-c", "2", "-W", "2", sv.PACS_IP])
        rx = lab.spawn("pacs", ["socat", "-u", "UDP4-RECV:67,reuseaddr", "OPEN:"
                                f"{lab.workdir}/dhcp.bin,creat,trunc"], "dhcp-rx.log")  # fmt: skip
        lab.wait_listen("pacs", 67, proc=rx, log="dhcp-rx.log", udp=True)
        lab.run("modality", ["socat", "-u", "-",
                             "UDP4-DATAGRAM:255.255.255.255:67,broadcast,sourceport=68,so-bindtodevice=eth0"],
                input="DHCPDISCOVER-lab")  # fmt: skip
        got = lab.workdir / "dhcp.bin"
        try:
            sv.wait_for(lambda: got.exists() and got.read_text(), 5, "the broadcast at the PACS")
        finally:
            lab.stop(rx)
        sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET)
    assert (lab.workdir / "dhcp.bin").read_text() == "DHCPDISCOVER-lab", "broadcast UDP blocked"
    assert tshark(pcap, "icmp.type == 0"), "ICMP echo reply did not cross"
    box_mac = lab.run("box", ["cat", "/sys/class/net/br0/address"]).stdout.strip()
    sources = set(tshark(pcap, "ip", ("ip.src",)))
    assert sources <= {sv.DEVICE_IP, sv.PACS_IP, sv.HIS_IP, sv.MALLORY_IP}, sources
    assert tshark(pcap, f"ip and eth.src == {box_mac}") == [], "box MAC on an IP frame"
    arp_ips = set(tshark(pcap, f"arp and eth.src == {box_mac}", ("arp.src.proto_ipv4",)))
    assert arp_ips <= {"0.0.0.0"}, f"box ARP claims an address: {arp_ips}"
    neigh = lab.run("pacs", ["ip", "neigh", "show", sv.DEVICE_IP]).stdout
    assert "02:00:5e:10:00:10" in neigh, f"PACS sees the device at another MAC: {neigh}"


def test_box_own_traffic_borrows_device_ip_without_management_address(env):
    lab = env.lab
    cert, key, ca = env.tls("device")
    with lab.capture("mallory", "box", "own.pcap") as pcap:
        r = lab.run("box", [sys.executable, "-c", BOX_CLIENT, cert, key, ca])
    assert "MSA|AA|BOX1" in r.stdout, r.stdout + r.stderr
    sources = set(tshark(pcap, "tcp.port == 2575", ("ip.src",)))
    assert sources == {sv.DEVICE_IP, sv.HIS_IP}, sources


def test_ipv6_tcp_blocked_never_bypassed(env):
    lab = env.lab
    lab.run("modality", ["ip", "addr", "add", "2001:db8:4d54::10/64", "dev", "eth0", "nodad"])
    lab.run("pacs", ["ip", "addr", "add", "2001:db8:4d54::20/64", "dev", "eth0", "nodad"])
    sink = f"OPEN:{lab.workdir}/v6.bin,creat,append"
    listener = lab.spawn("modality", ["socat", "-u", "TCP6-LISTEN:8104,reuseaddr", sink], "v6.log")
    try:
        lab.wait_listen("modality", 8104, proc=listener, log="v6.log")
        lab.run("pacs", ["ping", "-6", "-c", "1", "-W", "3", "2001:db8:4d54::10"])
        for ns, dst in (
            ("pacs", "[2001:db8:4d54::10]:8104"),
            ("modality", "[2001:db8:4d54::20]:104"),
        ):
            r = lab.run(ns, ["socat", "-u", "-", f"TCP6:{dst},connect-timeout=2"],
                        input="v6 plaintext", check=False, timeout=10)  # fmt: skip
            assert r.returncode != 0, f"IPv6 TCP {ns} -> {dst} crossed the box"
        counter = lab.run("box", ["nft", "list", "counter", "bridge", "medtls", "ipv6_tcp"])
        assert "packets 0 " not in counter.stdout, counter.stdout
        assert "IPv6 TCP blocked" in lab.run("box", ["nft", "list", "table", "bridge",
                                                     "medtls"]).stdout  # fmt: skip
    finally:
        lab.stop(listener)
        lab.run(
            "modality", ["ip", "addr", "del", "2001:db8:4d54::10/64", "dev", "eth0"], check=False
        )
        lab.run("pacs", ["ip", "addr", "del", "2001:db8:4d54::20/64", "dev", "eth0"], check=False)
    received = lab.workdir / "v6.bin"
    assert not received.exists() or not received.read_bytes()


def _variant(env, name: str, **changes):
    cfg = yaml.safe_load(env.config.read_text())
    for key, value in changes.items():
        cfg[key] = value
    path = env.lab.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_passthrough_port_is_the_only_plain_way_in(env):
    lab = env.lab
    variant = _variant(env, "passthrough", passthrough={"inbound_ports": [8080]})
    rx = lab.spawn("modality", ["socat", "-u", "TCP4-LISTEN:8080,reuseaddr,fork", "OPEN:"
                                f"{lab.workdir}/pt.bin,creat,append"], "pt-rx.log")  # fmt: skip
    try:
        lab.wait_listen("modality", 8080, proc=rx, log="pt-rx.log")
        probe = ["socat", "-u", "-", f"TCP:{sv.DEVICE_IP}:8080,connect-timeout=2"]
        r = lab.run("mallory", probe, input="before\n", check=False, timeout=10)
        assert r.returncode != 0, "port 8080 open before it was configured as pass-through"
        sv.apply_rules(lab, variant)
        lab.run("mallory", probe, input="plain-ok\n", timeout=10)
    finally:
        sv.apply_rules(lab, env.config)
        lab.stop(rx)
    assert (lab.workdir / "pt.bin").read_text() == "plain-ok\n"


def _chatter_until_done(lab, proc, seconds: float = 20) -> None:
    """The device talks (ARP + ICMP) until `medtls learn` has decided."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        lab.run("modality", ["ip", "neigh", "flush", "dev", "eth0"], check=False)
        lab.run("modality", ["ping", "-c", "1", "-W", "1", sv.PACS_IP], check=False)
        time.sleep(0.2)


def test_learn_device_then_refuse_a_changed_one(env):
    lab = env.lab
    auto = _variant(env, "auto", device={"ip": "auto"})
    state = lab.workdir / "learned.json"
    learn = sv.medtls_argv("learn", "--config", str(auto), "--state", str(state), "--timeout", "20")
    try:
        lab.run("box", sv.medtls_argv("rules", "teardown", "--config", str(env.config)))
        proc = lab.spawn("box", learn, "learn-1.log")
        _chatter_until_done(lab, proc)
        assert proc.wait(30) == 0, lab.log("learn-1.log")
        assert "learned device 198.18.0.10 (02:00:5e:10:00:10)" in lab.log("learn-1.log")
        sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET)
        shown = lab.run("box", sv.medtls_argv("rules", "--config", str(auto), "--state",
                                              str(state))).stdout  # fmt: skip
        assert "ether saddr != 02:00:5e:10:00:10" in shown
        # The cable is moved to another device: detected, logged and refused.
        lab.run("modality", ["ip", "link", "set", "eth0", "address", "02:00:5e:10:00:99"])
        proc = lab.spawn("box", learn, "learn-2.log")
        _chatter_until_done(lab, proc)
        assert proc.wait(30) == 3, lab.log("learn-2.log")
        assert "device changed: expected 198.18.0.10 (02:00:5e:10:00:10)" in lab.log("learn-2.log")
        r = sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, check=False)
        assert r.returncode != 0, "a changed device was let through"
    finally:
        lab.run("modality", ["ip", "link", "set", "eth0", "address", "02:00:5e:10:00:10"])
        sv.apply_rules(lab, env.config)
    sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET)


def test_teardown_removes_exactly_what_apply_added(env, tmp_path):
    ns = f"{env.lab.prefix}scratch"

    def nsrun(*argv, **kw):
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                              text=True, check=True, **kw)  # fmt: skip

    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        nsrun("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        nsrun("ip", "link", "add", "br0", "type", "bridge")
        nsrun("ip", "link", "set", "eth0", "master", "br0")
        nsrun("ip", "link", "set", "eth1", "master", "br0")
        for ifname in ("eth0", "eth1", "br0"):
            nsrun("ip", "link", "set", ifname, "up")
        nsrun("nft", "add", "table", "inet", "other")
        nsrun("ip", "rule", "add", "fwmark", "7", "lookup", "77")

        def snapshot():
            cmds = (("nft", "-s", "list", "ruleset"), ("ip", "-4", "rule"),
                    ("ip", "-4", "route", "show", "table", "all"), ("ip", "neigh"),
                    ("ip", "-4", "addr"))  # fmt: skip
            return [nsrun(*c).stdout for c in cmds]

        before = snapshot()
        ntp = _variant(env, "teardown-ntp", ntp={"servers": ["198.18.0.123"]})
        device = yaml.safe_load(env.config.read_text())["device"]
        gw = _variant(env, "teardown-gw", ntp={"servers": ["198.18.5.123"]},
                      device={**device, "prefix": 24, "gateway": "198.18.0.1"})  # fmt: skip
        gw_route = "default via 198.18.0.1 dev br0 table 28022 src 192.0.0.8 onlink"
        for config, owned in ((env.config, "28020"), (ntp, "28022"), (gw, gw_route)):

            def rules(action, config=config):
                return nsrun(*sv.medtls_argv("rules", action, "--config", str(config)))

            rules("apply")
            first = snapshot()
            rules("apply")
            assert snapshot() == first, f"apply is not idempotent ({config.name})"
            assert "table bridge medtls" in first[0] and owned in first[1] + first[2]
            rules("teardown")
            assert snapshot() == before, f"teardown left something ({config.name})"
        # Dropping device.gateway removes its routes on the next apply (no stale subnet route).
        nsrun(*sv.medtls_argv("rules", "apply", "--config", str(gw)))
        assert "198.18.0.0/24 dev br0 table 28021 scope link" in snapshot()[2]
        nsrun(*sv.medtls_argv("rules", "apply", "--config", str(ntp)))
        routes = snapshot()[2]
        assert "via" not in routes and "198.18.0.0/24" not in routes, routes
        assert "default dev br0 table 28021 scope link" in routes, routes
        nsrun(*sv.medtls_argv("rules", "teardown", "--config", str(ntp)))
        assert snapshot() == before
        # Dropping ntp.servers from the configuration removes its routing on the next apply.
        nsrun(*sv.medtls_argv("rules", "apply", "--config", str(gw)))
        plain = sv.medtls_argv("rules", "apply", "--config", str(env.config))
        nsrun(*plain)
        without = snapshot()
        assert "28022" not in without[1] + without[2] and "192.0.0.8" not in without[4]
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_lab_dir_is_importable():
    assert (LAB_DIR / "topology.sh").exists()


def test_optional_management_address_coexists(env):
    """A management address on the bridge reaches the box; the device's flows are unchanged."""
    lab = env.lab
    lab.run("box", ["ip", "addr", "add", "198.18.0.5/24", "dev", "br0"])
    rx = lab.spawn("box", ["socat", "-u", "TCP4-LISTEN:2222,bind=198.18.0.5,reuseaddr",
                           f"OPEN:{lab.workdir}/mgmt.bin,creat,trunc"], "mgmt.log")  # fmt: skip
    try:
        lab.wait_listen("box", 2222, proc=rx, log="mgmt.log")
        lab.run("pacs", ["socat", "-u", "-", "TCP:198.18.0.5:2222,connect-timeout=3"],
                input="mgmt\n", timeout=10)  # fmt: skip
        sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET)
    finally:
        lab.stop(rx)
        lab.run("box", ["ip", "addr", "del", "198.18.0.5/24", "dev", "br0"], check=False)
        # Removing the bridge's last address makes the kernel flush routes via it: re-apply.
        sv.apply_rules(lab, env.config)
    sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET)
    assert (lab.workdir / "mgmt.bin").read_text() == "mgmt\n"
