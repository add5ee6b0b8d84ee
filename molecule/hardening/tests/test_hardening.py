"""The hardening role: effective sshd settings, accounts, services, sysctls, upgrades, time."""

import pytest


@pytest.fixture(scope="module")
def sshd(host):
    out = host.check_output("/usr/sbin/sshd -T")
    conf = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        conf[key] = value
    return conf


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("passwordauthentication", "no"),
        ("kbdinteractiveauthentication", "no"),
        ("permitemptypasswords", "no"),
        ("pubkeyauthentication", "yes"),
        ("authenticationmethods", "publickey"),
        ("permitrootlogin", "without-password"),
        ("x11forwarding", "no"),
        ("allowtcpforwarding", "no"),
        ("maxauthtries", "3"),
        ("ciphers", "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com"),
        ("macs", "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com"),
    ],
)
def test_sshd_effective(sshd, key, value):
    assert sshd[key] == value


def test_sshd_no_weak_kex(sshd):
    kex = sshd["kexalgorithms"].split(",")
    assert kex[0] == "mlkem768x25519-sha256"
    assert not [k for k in kex if "sha1" in k or k.startswith("ecdh-sha2") or "group14" in k]


def test_sshd_running_with_host_keys(host):
    assert host.service("ssh.service").is_running
    key = host.file("/etc/ssh/ssh_host_ed25519_key")
    assert key.mode == 0o600
    assert host.service("medtls-ssh-hostkeys.service").is_enabled


@pytest.mark.parametrize("user", ["root", "pi", "kiosk"])
def test_passwords_locked(host, user):
    # `passwd -S` prints L for a locked password (pi had "raspberry", kiosk none at all).
    assert host.check_output(f"passwd -S {user}").split()[1] == "L"


@pytest.mark.parametrize(
    "unit", ["avahi-daemon.service", "bluetooth.service", "wpa_supplicant.service"]
)
def test_services_masked(host, unit):
    assert host.run(f"systemctl is-enabled {unit}").stdout.strip() == "masked"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("net.ipv4.ip_forward", 0),
        ("net.ipv4.conf.all.accept_redirects", 0),
        ("net.ipv4.conf.all.send_redirects", 0),
        ("net.ipv4.conf.all.accept_source_route", 0),
        ("net.ipv4.conf.all.rp_filter", 0),
        ("net.ipv4.tcp_syncookies", 1),
        ("net.ipv6.conf.all.accept_ra", 0),
    ],
)
def test_network_sysctls_applied(host, key, value):
    assert host.sysctl(key) == value


def test_kernel_sysctls_written(host):
    conf = host.file("/etc/sysctl.d/60-medtls-hardening.conf")
    assert conf.contains("^-kernel.kptr_restrict = 2$")
    assert conf.contains("^-fs.protected_regular = 2$")


def test_module_blacklist_keeps_vfat(host):
    conf = host.file("/etc/modprobe.d/medtls-hardening.conf")
    assert conf.contains("^install cramfs /bin/false$")
    assert not conf.contains("vfat")


def test_unattended_security_upgrades(host):
    dump = host.check_output("apt-config dump")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert "Debian-Security" in dump
    assert host.package("unattended-upgrades").is_installed


def test_journald_bounded(host):
    conf = host.file("/etc/systemd/journald.conf.d/10-medtls.conf")
    assert conf.contains("^SystemMaxUse=64M$")
    effective = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert "SystemMaxUse=64M" in effective


def test_time_sync_before_tls(host):
    assert host.service("systemd-timesyncd.service").is_enabled
    assert host.service("systemd-time-wait-sync.service").is_enabled
    wanted = host.check_output("systemctl show -P WantedBy systemd-time-wait-sync.service")
    assert "sysinit.target" in wanted or "time-sync.target" in host.check_output(
        "systemctl show -P Before systemd-time-wait-sync.service"
    )


def test_pi_radios_disabled(host):
    conf = host.file("/boot/firmware/config.txt")
    assert conf.contains("^dtoverlay=disable-wifi$")
    assert conf.contains("^dtoverlay=disable-bt$")
    assert conf.contains("^dtparam=audio=on$")
