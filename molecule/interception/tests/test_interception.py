"""The interception role: bridge without addresses, medtls ruleset loaded, fail closed."""

import re
import time

import pytest

UDP_ECHO = (
    "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.bind(('198.18.0.20', 7007)); "
    "exec('while True:\\n d, a = s.recvfrom(100)\\n s.sendto(d, a)')"
)
UDP_PING = (
    "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.settimeout(1.5); s.sendto(b'ping', ('198.18.0.20', 7007)); "
    "sys.exit(0 if s.recv(100) == b'ping' else 1)"
)


@pytest.fixture(scope="module")
def udp_echo(host):
    host.run("systemctl stop medtls-test-udp 2>/dev/null; systemctl reset-failed medtls-test-udp")
    host.run_expect(
        [0], f'systemd-run --unit=medtls-test-udp ip netns exec lan python3 -c "{UDP_ECHO}"'
    )
    time.sleep(0.5)
    yield
    host.run("systemctl stop medtls-test-udp")


def udp_crosses_bridge(host) -> bool:
    return any(host.run(f'ip netns exec dev python3 -c "{UDP_PING}"').rc == 0 for _ in range(3))


def test_ports_enslaved_bridge_without_addresses(host):
    for port in ("eth0", "eth1"):
        assert (
            host.file(f"/sys/class/net/{port}/master").linked_to == "/sys/devices/virtual/net/br0"
        )
    assert host.check_output("ip -o addr show dev br0") == ""
    for port in ("eth0", "eth1"):
        assert host.check_output(f"ip -o addr show dev {port}") == ""
    assert host.check_output("networkctl status br0 --no-pager").count("configured") >= 1


def test_units_active_and_ordered(host):
    assert host.service("medtls-failclosed.service").is_enabled
    assert host.service("medtls-interception.service").is_enabled
    assert host.service("medtls-interception.service").is_running
    before = host.check_output("systemctl show -P Before medtls-interception.service").split()
    assert "medtls.service" in before
    assert (
        "network-pre.target"
        in host.check_output("systemctl show -P Before medtls-failclosed.service").split()
    )
    dropin = host.check_output("systemctl show -P Requires medtls.service")
    assert "medtls-interception.service" in dropin


@pytest.mark.parametrize(
    ("family", "chains"),
    [
        ("bridge", ["prerouting", "from_device", "to_device", "forward", "output"]),
        ("inet", ["prerouting", "forward"]),
    ],
)
def test_ruleset_loaded(host, family, chains):
    table = host.check_output(f"nft list table {family} medtls")
    for chain in chains:
        assert re.search(rf"^\s+chain {chain} {{", table, re.M), chain
    if family == "inet":
        assert "tproxy ip to :15001" in table
        assert "tproxy ip to :15002" in table


def test_failclosed_table_removed_once_applied(host):
    assert host.run("nft list table bridge medtls_failclosed").rc != 0


def test_policy_routing(host):
    rules = host.check_output("ip -4 rule show")
    assert re.search(r"fwmark 0x6d74 lookup 28020", rules)
    assert "local default dev lo" in host.check_output("ip -4 route show table 28020")


def test_sysctls(host):
    assert host.sysctl("net.ipv4.ip_forward") == 0
    assert host.sysctl("net.bridge.bridge-nf-call-iptables") == 0
    assert host.file("/etc/sysctl.d/61-medtls-interception.conf").contains("rp_filter = 0")


def test_fail_closed_and_reopen(host, udp_echo):
    # Interception in place: what is not TCP crosses the bridge untouched.
    assert udp_crosses_bridge(host)
    host.run_expect([0], "systemctl stop medtls-interception.service")
    try:
        assert host.run("nft list table bridge medtls_failclosed").rc == 0
        assert host.run("nft list table bridge medtls").rc != 0
        assert not udp_crosses_bridge(host)
    finally:
        host.run_expect([0], "systemctl start medtls-interception.service")
    assert host.run("nft list table bridge medtls_failclosed").rc != 0
    assert udp_crosses_bridge(host)


def test_ruleset_unit_ordered_after_firstboot(host):
    # medtls-firstboot does not exist in this container: the ordering must still load cleanly.
    after = host.check_output("systemctl show -P After medtls-interception.service").split()
    assert "medtls-firstboot.service" in after
    assert host.service("medtls-interception.service").is_running


def test_timesyncd_dropin_lists_only_the_configured_servers(host):
    dropin = host.file("/etc/systemd/timesyncd.conf.d/medtls.conf")
    assert dropin.mode == 0o644 and dropin.user == "root"
    lines = [x for x in dropin.content_string.splitlines() if x and not x.startswith("#")]
    assert lines == ["[Time]", "NTP=", "NTP=198.18.0.123", "FallbackNTP="]
    # Written by the ruleset unit from ntp.servers of the configuration (first-boot path).
    runtime = host.file("/run/systemd/timesyncd.conf.d/medtls.conf")
    assert runtime.mode == 0o644
    assert "\nNTP=\nNTP=198.18.0.123\nFallbackNTP=\n" in runtime.content_string
    network = host.file("/etc/systemd/network/40-medtls-bridge.network").content_string
    assert "RequiredForOnline=carrier" in network
    # timesyncd polls only when networkd calls the box online; with no address that needs this.
    state = host.file("/run/systemd/netif/state").content_string
    assert "ONLINE_STATE=online" in state, state


def test_ntp_borrows_the_device_identity_in_the_ruleset(host):
    inet = host.check_output("nft list table inet medtls")
    assert "snat ip to 198.18.0.10:28100-28115" in inet
    bridge = host.check_output("nft list table bridge medtls")
    assert re.search(r"udp sport 123 udp dport 28100-28115 meta pkttype set host", bridge)
    assert re.search(
        r"to 198\.18\.0\.123 ipproto udp dport 123 lookup 28022",
        host.check_output("ip -4 rule show"),
    )
    assert "src 192.0.0.8" in host.check_output("ip -4 route show table 28022")


@pytest.mark.parametrize("unit", ["medtls-failclosed.service", "medtls-interception.service"])
def test_units_are_the_packaged_ones(host, unit):
    """The package's unit (packaging/systemd/), not one the role wrote to /etc/systemd/system."""
    assert not host.file(f"/etc/systemd/system/{unit}").exists
    path = host.check_output(f"systemctl show -P FragmentPath {unit}")
    assert path in (f"/lib/systemd/system/{unit}", f"/usr/lib/systemd/system/{unit}")
    # dpkg knows /lib/systemd/system on a merged /usr, systemd names /usr/lib.
    assert host.run(f"dpkg -S /lib/systemd/system/{unit}").stdout.startswith("medtls:")
    assert host.run(f"systemd-analyze verify --man=no {unit}").rc == 0


def test_ruleset_unit_reads_the_site_values(host):
    environment = host.file("/etc/default/medtls-interception").content_string
    assert "MEDTLS_BRIDGE=br0\n" in environment
    assert "MEDTLS_CONFIG=/etc/medtls/medtls.yaml\n" in environment
    drop_in = "/etc/systemd/system/medtls-interception.service.d/medtls-role.conf"
    assert drop_in in host.check_output("systemctl show -P DropInPaths medtls-interception.service")
    # The fail-closed ruleset is the package's file; the role's earlier copy is gone.
    assert not host.file("/etc/medtls/failclosed.nft").exists
    assert host.run("dpkg -S /usr/share/medtls/failclosed.nft").rc == 0
