"""The proxy role: package, user, checked configuration, sandboxed unit that runs."""

import re

import pytest

UNIT = "medtls.service"


def test_debian_package_and_command(host):
    package = host.package("medtls")
    assert package.is_installed
    out = host.check_output("/usr/bin/medtls --version")
    assert out == f"medtls {package.version}"
    # dpkg owns the code: every file matches the package's checksums.
    host.run_expect([0], "debsums -s medtls")
    assert not host.file("/opt/medtls/lib").exists
    # Debian packages only: no pip, the dependencies come from the archive.
    assert host.package("python3-yaml").is_installed
    assert host.package("python3-cryptography").is_installed
    assert not host.exists("pip3")


def test_system_user(host):
    user = host.user("medtls")
    assert user.exists
    assert user.uid < 1000
    assert user.shell == "/usr/sbin/nologin"


def test_configuration_checked_and_private(host):
    conf = host.file("/etc/medtls/medtls.yaml")
    assert conf.user == "root"
    assert conf.group == "medtls"
    assert conf.mode == 0o640
    assert "198.18.0.10" in conf.content_string
    host.run_expect([0], "/usr/bin/medtls check --config /etc/medtls/medtls.yaml")


def test_service_runs_as_medtls(host):
    svc = host.service(UNIT)
    assert svc.is_enabled
    assert svc.is_running
    pid = host.check_output(f"systemctl show -P MainPID {UNIT}")
    status = host.file(f"/proc/{pid}/status").content_string
    uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
    assert int(uid) == host.user("medtls").uid
    # Only CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12) in the bounding set.
    bnd = int(re.search(r"^CapBnd:\s+([0-9a-f]+)", status, re.M).group(1), 16)
    assert bnd == (1 << 10) | (1 << 12)


def test_listeners(host):
    assert host.socket("tcp://0.0.0.0:15001").is_listening
    assert host.socket("tcp://0.0.0.0:15002").is_listening


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("Restart", "on-failure"),
        # 2 x (max_connections 1024 + max_handshakes 256) + 256 (molecule/shared/vars.yml)
        ("LimitNOFILE", "2816"),
        ("WatchdogUSec", "5s"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("User", "medtls"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_NETLINK AF_UNIX"),
        ("CapabilityBoundingSet", "cap_net_bind_service cap_net_admin"),
        ("AmbientCapabilities", "cap_net_bind_service cap_net_admin"),
    ],
)
def test_unit_property(host, prop, value):
    assert host.check_output(f"systemctl show -P {prop} {UNIT}") == value


def test_unit_waits_for_time_and_reloads(host):
    after = host.check_output(f"systemctl show -P After {UNIT}").split()
    assert "time-sync.target" in after
    assert "medtls-interception.service" in after
    # trixie's systemd (>= 253): systemd sends SIGHUP itself and waits for RELOADING=1/READY=1;
    # older systemd: Type=notify with ExecReload=kill -HUP (roles/proxy medtls_proxy_service_type).
    version = int(host.check_output("systemctl --version").split()[1])
    if version >= 253:
        assert host.check_output(f"systemctl show -P Type {UNIT}") == "notify-reload"
        assert host.check_output(f"systemctl show -P ReloadSignal {UNIT}") == "1"
    else:
        assert "kill -HUP" in host.check_output(f"systemctl show -P ExecReload {UNIT}")
        assert host.check_output(f"systemctl show -P Type {UNIT}") == "notify"


def packaged(host, unit: str) -> str:
    """The unit's file, asserted to be the medtls package's (dpkg names /lib or /usr/lib; a
    merged-/usr system reports the latter)."""
    fragment = host.check_output(f"systemctl show -P FragmentPath {unit}")
    assert fragment in (f"/lib/systemd/system/{unit}", f"/usr/lib/systemd/system/{unit}")
    owner = host.check_output(f"dpkg -S {fragment} || dpkg -S {fragment.removeprefix('/usr')}")
    assert owner.startswith("medtls: "), owner
    return fragment


def test_unit_is_the_package_s_with_the_role_s_drop_in(host):
    fragment = packaged(host, UNIT)
    dropin = f"/etc/systemd/system/{UNIT}.d/medtls-role.conf"
    assert dropin in host.check_output(f"systemctl show -P DropInPaths {UNIT}").split()
    assert not host.file(f"/etc/systemd/system/{UNIT}").exists
    # The packaged unit with its drop-ins (the role's, the interception role's) is valid.
    host.run_expect([0], f"systemd-analyze verify --man=no {UNIT}")
    cat = host.check_output(f"systemctl cat {UNIT}")
    assert f"# {fragment}" in cat and f"# {dropin}" in cat


def effective(unit_text: str, key: str) -> list[str]:
    """The values of a list setting after the unit and its drop-ins (an empty one resets)."""
    values: list[str] = []
    for line in unit_text.splitlines():
        if line.startswith(key + "="):
            value = line.split("=", 1)[1]
            values = [*values, value] if value else []
    return values


def test_unit_fails_without_configuration_and_outlasts_the_drain(host):
    unit = host.check_output(f"systemctl cat {UNIT}")
    assert effective(unit, "AssertPathExists") == ["/etc/medtls/medtls.yaml"]
    assert effective(unit, "ConditionPathExists") == []
    # limits.drain_timeout (30 s unless the scenario sets it) + 15 s margin.
    assert host.check_output(f"systemctl show -P TimeoutStopUSec {UNIT}") == "45s"


def test_led_unit_is_the_package_s(host):
    led = "medtls-led.service"
    packaged(host, led)
    assert host.service(led).is_enabled
    assert "/etc/systemd/system/medtls-led.service.d/medtls-role.conf" in host.check_output(
        f"systemctl show -P DropInPaths {led}"
    )
    host.run_expect([0], f"systemd-analyze verify --man=no {led}")


def test_exposure_score(host):
    out = host.check_output(f"systemd-analyze security --no-pager {UNIT}")
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print(f"exposure {score}")
    assert score <= 2.0
