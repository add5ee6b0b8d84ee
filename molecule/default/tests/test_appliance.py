"""The whole appliance: a device in one namespace, a PACS in another, TLS between them.

dev (198.18.0.10) --plain--> [eth0 br0 eth1: medtls] --mutual TLS--> lan (PACS 198.18.0.20)
"""

import time

import pytest

PEERS = "/root/peers"
ECHO = (
    "import socketserver as s\n"
    "class H(s.StreamRequestHandler):\n"
    "    def handle(self):\n"
    "        self.wfile.write(b'device got ' + self.rfile.readline())\n"
    "s.TCPServer.allow_reuse_address = True\n"
    "s.TCPServer(('198.18.0.10', 104), H).serve_forever()\n"
)
DEVICE_CLIENT = (
    "import socket\n"
    "c = socket.create_connection(('198.18.0.20', 104), timeout=10)\n"
    "c.sendall(b'hello pacs\\n')\n"
    "print(c.makefile('rb').readline().decode().strip())\n"
)


def start(host, unit, netns, command):
    host.run(f"systemctl stop {unit}; systemctl reset-failed {unit}")
    host.run_expect([0], f"systemd-run --unit={unit} ip netns exec {netns} {command}")


@pytest.fixture(scope="module")
def peers(host):
    host.run(f'printf %s "{ECHO}" > {PEERS}/echo.py')
    host.run(f'printf %s "{DEVICE_CLIENT}" > {PEERS}/client.py')
    # The PACS: TLS only, client certificate required, answers each line reversed.
    start(
        host,
        "medtls-test-pacs",
        "lan",
        f"openssl s_server -quiet -rev -accept 198.18.0.20:2762 -cert {PEERS}/pacs.crt "
        f"-key {PEERS}/pacs.key -CAfile {PEERS}/ca.pem -Verify 2 -verify_return_error",
    )
    # The device's own plain DICOM port.
    start(host, "medtls-test-device", "dev", f"python3 {PEERS}/echo.py")
    time.sleep(1)
    yield
    host.run("systemctl stop medtls-test-pacs medtls-test-device")


def test_services_up(host):
    for unit in ("medtls.service", "medtls-interception.service", "ssh.service"):
        assert host.service(unit).is_running, unit
    assert host.run("nft list table bridge medtls").rc == 0
    assert host.run("nft list table bridge medtls_failclosed").rc != 0


def test_packaged_unit_with_the_roles_drop_ins(host):
    """The daemon runs the package's unit; the roles add only drop-ins (docs/packaging.md)."""
    fragment = host.check_output("systemctl show -P FragmentPath medtls.service")
    # dpkg names /lib; a merged-/usr system reports /usr/lib.
    owner = host.check_output(f"dpkg -S {fragment} || dpkg -S {fragment.removeprefix('/usr')}")
    assert owner.startswith("medtls: "), owner
    dropins = host.check_output("systemctl show -P DropInPaths medtls.service").split()
    assert "/etc/systemd/system/medtls.service.d/medtls-role.conf" in dropins
    assert "/etc/systemd/system/medtls.service.d/10-interception.conf" in dropins
    shown = host.check_output("systemctl show -p LimitNOFILE,TimeoutStopUSec,Type medtls.service")
    version = int(host.check_output("systemctl --version").split()[1])
    # 2 x (1024 + 256) + 256 and drain_timeout 30 s + 15 s (molecule/shared/vars.yml)
    assert shown.splitlines() == [
        f"Type={'notify-reload' if version >= 253 else 'notify'}",
        "TimeoutStopUSec=45s",
        "LimitNOFILE=2816",
    ]
    assert (
        "medtls-interception.service"
        in host.check_output("systemctl show -P Requires medtls.service").split()
    )
    host.run_expect([0], "systemd-analyze verify --man=no medtls.service")


def test_device_reaches_pacs_over_mutual_tls(host, peers):
    # The device speaks plain TCP to the PACS's plain port; only the TLS server answers, so the
    # reversed line proves medtls carried it over TLS with the box's client certificate.
    out = host.check_output(f"ip netns exec dev python3 {PEERS}/client.py")
    assert out == "scap olleh"


def test_pacs_reaches_device_over_mutual_tls(host, peers):
    cmd = (
        f"echo 'study 1' | timeout 15 ip netns exec lan openssl s_client -quiet "
        f"-connect 198.18.0.10:2762 -cert {PEERS}/pacs.crt -key {PEERS}/pacs.key "
        f"-CAfile {PEERS}/ca.pem -verify_return_error -verify_ip 198.18.0.10 -ign_eof"
    )
    out = host.run(cmd)
    assert "device got study 1" in out.stdout, out.stderr


def test_plaintext_from_lan_is_refused(host, peers):
    # A LAN host trying the device's plain port directly gets nothing (fail closed).
    probe = (
        "import socket, sys\n"
        "try:\n"
        "    c = socket.create_connection(('198.18.0.10', 104), timeout=3)\n"
        "    c.sendall(b'x\\n'); sys.exit(0 if c.recv(100) else 2)\n"
        "except OSError:\n"
        "    sys.exit(2)\n"
    )
    host.run(f'printf %s "{probe}" > {PEERS}/probe.py')
    assert host.run(f"ip netns exec lan python3 {PEERS}/probe.py").rc == 2
