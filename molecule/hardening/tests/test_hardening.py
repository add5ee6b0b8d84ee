"""The hardening role: effective sshd settings, accounts, services, sysctls, upgrades, time,
login defaults, PAM, banners, core dumps, AIDE, auditd, process accounting, fail2ban."""

import pytest


@pytest.fixture(scope="module")
def sshd(host):
    out = host.check_output("/usr/sbin/sshd -T")
    conf = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        # Repeated keys (one allowgroups line per group) are joined.
        conf[key] = f"{conf[key]} {value}" if key in conf else value
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
        ("maxsessions", "2"),
        ("tcpkeepalive", "no"),
        ("allowagentforwarding", "no"),
        ("loglevel", "VERBOSE"),
        ("clientaliveinterval", "300"),
        ("clientalivecountmax", "2"),
        ("banner", "/etc/issue.net"),
        ("allowgroups", "root sudo"),
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


@pytest.mark.parametrize("module", ["usb_storage", "uas", "firewire_core", "dccp", "sctp", "tipc"])
def test_removable_storage_and_rare_protocols_blocked(host, module):
    # modprobe's own view of /etc/modprobe.d (the container has no modules to load).
    config = host.check_output("modprobe --showconfig").splitlines()
    assert f"install {module} /bin/false" in config
    assert f"blacklist {module}" in config


def test_log_martians_applied(host):
    assert host.sysctl("net.ipv4.conf.all.log_martians") == 1
    assert host.sysctl("net.ipv4.conf.default.log_martians") == 1


def test_kernel_sysctls_for_the_box(host):
    # kernel.* and dev.* are the host's in a container: the file is what the box applies at boot.
    conf = host.file("/etc/sysctl.d/60-medtls-hardening.conf")
    assert conf.contains("^-kernel.perf_event_paranoid = 3$")
    assert conf.contains("^-dev.tty.ldisc_autoload = 0$")


def test_unattended_security_upgrades(host):
    dump = host.check_output("apt-config dump")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert "Debian-Security" in dump
    # Hardened conffiles are kept instead of stopping the upgrade at a prompt.
    assert 'DPkg::Options:: "--force-confold";' in dump
    assert host.package("unattended-upgrades").is_installed


def test_security_archive_in_apt_sources(host):
    # What apt would fetch: without this source the Debian-Security origin has nothing to offer.
    uris = host.check_output("apt-get indextargets --no-release-info --format '$(URI)'")
    assert "http://security.debian.org/debian-security/dists/trixie-security/main/" in uris


def test_needrestart_restarts_daemons_after_upgrades(host):
    assert host.package("needrestart").is_installed
    assert host.file("/etc/apt/apt.conf.d/99needrestart").exists
    conf = host.file("/etc/needrestart/conf.d/50-medtls.conf")
    assert conf.contains(r"^\$nrconf{restart} = 'a';$")
    assert host.run("perl -c /etc/needrestart/conf.d/50-medtls.conf").rc == 0


def test_apt_listchanges_hooked(host):
    assert host.package("apt-listchanges").is_installed
    assert "apt-listchanges --apt" in host.check_output("apt-config dump DPkg::Pre-Install-Pkgs")


def test_debsums_verifies_packages(host):
    assert host.run("debsums -s openssh-server").rc == 0


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


@pytest.fixture()
def login_user(host):
    # An account created after the role: it gets login.defs's defaults, as an operator's would.
    host.run("userdel -r medtlsprobe 2>/dev/null")
    host.run_expect([0], "useradd --create-home --shell /bin/bash medtlsprobe")
    yield "medtlsprobe"
    host.run("userdel -r medtlsprobe")


def test_login_defs(host, login_user):
    defs = host.file("/etc/login.defs")
    expected = (
        "PASS_MAX_DAYS\t365",
        "PASS_MIN_DAYS\t1",
        "UMASK\t027",
        "SHA_CRYPT_MIN_ROUNDS\t65536",
    )
    for line in expected:
        assert defs.contains(f"^{line}$"), line
    # The distribution's value is replaced, not shadowed by a second line.
    assert len([x for x in defs.content_string.splitlines() if x.startswith("PASS_MAX_DAYS")]) == 1
    aging = host.check_output(f"chage -l {login_user}")
    assert "Maximum number of days between password change\t\t: 365" in aging
    assert "Minimum number of days between password change\t\t: 1" in aging


def test_login_shell_defaults(host, login_user):
    out = host.check_output(f"su -l {login_user} -c 'umask; ulimit -c; echo $TMOUT; echo $TMPDIR'")
    umask, core, tmout, tmpdir = out.split()
    assert (umask, core, tmout) == ("0027", "0", "900")
    # pam_tmpdir: a private temporary directory per user.
    uid = host.check_output(f"id -u {login_user}")
    assert tmpdir == f"/tmp/user/{uid}"


def test_password_quality_pam(host):
    assert host.package("libpam-passwdqc").is_installed
    assert host.file("/etc/pam.d/common-password").contains("pam_passwdqc.so")
    assert host.file("/etc/pam.d/common-session").contains("pam_tmpdir.so")


def test_key_only_account_never_expires(host):
    # keyonly was created with a 365-day password maximum before the role ran (converge.yml).
    aging = host.check_output("chage -l keyonly")
    assert "Maximum number of days between password change\t\t: -1" in aging


@pytest.mark.parametrize("path", ["/etc/issue", "/etc/issue.net"])
def test_legal_banners(host, path):
    banner = host.file(path)
    assert banner.contains("^Authorized access only.")
    assert banner.mode == 0o644


def test_core_dumps_disabled(host):
    # Services (medtls holds the device key in memory) and systemd-coredump.
    assert host.check_output("systemctl show -P DefaultLimitCORE") == "0"
    coredump = host.check_output("systemd-analyze cat-config systemd/coredump.conf")
    assert "Storage=none" in coredump
    limits = host.file("/etc/security/limits.d/10-medtls-coredump.conf")
    assert limits.contains(r"^\* hard core 0$")


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("/etc/ssh/sshd_config", 0o600),
        ("/etc/cron.daily", 0o700),
        ("/etc/cron.weekly", 0o700),
        ("/etc/cron.monthly", 0o700),
        ("/etc/sudoers.d", 0o750),
    ],
)
def test_restricted_permissions(host, path, mode):
    f = host.file(path)
    assert f.mode == mode
    assert f.user == "root"


def test_ctrl_alt_del_masked(host):
    assert host.run("systemctl is-enabled ctrl-alt-del.target").stdout.strip() == "masked"


def test_aide_detects_a_new_binary(host):
    assert host.file("/var/lib/aide/aide.db").user == "_aide"
    assert host.file("/etc/aide/aide.conf").contains("^Checksums = sha256[+]sha512$")
    assert host.service("medtls-aide-init.timer").is_enabled
    assert host.service("dailyaidecheck.timer").is_enabled
    probe = "/usr/local/sbin/medtls-aide-probe"
    check = f"aide --config /etc/aide/aide.conf --check --limit '^{probe}$'"
    assert host.run(check).rc == 0
    host.run_expect([0], f"echo x > {probe}")
    try:
        found = host.run(check)
    finally:
        host.run(f"rm -f {probe}")
    assert found.rc != 0
    assert probe in found.stdout


def test_audit_rules_and_accounting(host):
    rules = host.file("/etc/audit/rules.d/50-medtls.rules")
    assert rules.contains("^-w /etc/medtls -p wa -k medtls$")
    assert rules.contains("^-w /etc/sudoers.d -p wa -k privilege$")
    assert rules.contains("-S init_module -S finit_module -S delete_module -k modules$")
    for unit in ("auditd.service", "acct.service", "medtls-acct-rotate.timer"):
        assert host.service(unit).is_enabled, unit
    # The kernel's audit and accounting belong to the host: skipped in a container, not failed.
    for unit in ("auditd.service", "audit-rules.service", "acct.service"):
        assert "ConditionVirtualization=!container" in host.check_output(f"systemctl cat {unit}")
    assert host.file("/var/log/account/pacct").exists


def test_fail2ban_bans_into_its_own_table(host):
    status = host.check_output("fail2ban-client status sshd")
    assert "_SYSTEMD_UNIT=ssh.service" in status
    assert host.check_output("fail2ban-client get sshd bantime") == "3600"
    host.run_expect([0], "fail2ban-client set sshd banip 198.51.100.7")
    try:
        table = host.check_output("nft list table inet f2b-table")
    finally:
        host.run("fail2ban-client set sshd unbanip 198.51.100.7")
    assert "198.51.100.7" in table


def test_remote_logging_off_by_default(host):
    # The operator's choice (medtls_hardening_remote_syslog_host): nothing leaves the box unasked.
    assert not host.file("/etc/rsyslog.d/90-medtls-remote.conf").exists
    assert "ForwardToSyslog=no" in host.check_output(
        "systemd-analyze cat-config systemd/journald.conf"
    )
