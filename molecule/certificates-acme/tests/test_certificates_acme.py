"""The certificates role in acme mode: the box enrolled itself from pebble (EAB required)."""

import re

import pytest

STATE = "/var/lib/medtls/enrollment"
CHAIN = f"{STATE}/live/fullchain.pem"
KEY = f"{STATE}/live/key.pem"
CONFIG = "/etc/medtls/medtls.yaml"
CRL = "/etc/medtls/crl.pem"
CRL_URL = "http://127.0.0.1:18080/ca.crl"
CRL_STATE = "/var/lib/medtls/crl-fetch/state.json"  # crl_fetch.state_file's default
UNITS = (
    "medtls-enroll.service",
    "medtls-enroll.timer",
    "medtls-crl-fetch.service",
    "medtls-crl-fetch.timer",
)


def leaf_text(host):
    return host.check_output(f"openssl x509 -in {CHAIN} -noout -text")


def test_eab_key_private_to_root(host):
    f = host.file("/etc/medtls/acme-eab.key")
    assert f.user == "root" and f.group == "root"
    assert f.mode == 0o600


def test_acme_ca_installed(host):
    assert "medtls test CA" in host.check_output(
        "openssl x509 -in /etc/medtls/acme-ca.pem -noout -subject"
    )


def test_configuration_has_the_enrollment_section(host):
    text = host.file(CONFIG).content_string
    assert "enrollment:" in text
    assert "directory: https://127.0.0.1:14000/dir" in text
    assert "eab_hmac_key_file: /etc/medtls/acme-eab.key" in text
    host.run_expect([0], f"/usr/bin/medtls check --config {CONFIG}")


def test_certificate_carries_identifiers_and_both_ekus(host):
    text = leaf_text(host)
    assert "IP Address:198.18.0.10" in text
    assert "DNS:ct1-box.hospital.example" in text
    # pebble 2.4.0 issues both EKUs (>= 2.7 serverAuth only: docs/certificates.md).
    assert "TLS Web Client Authentication" in text
    assert "TLS Web Server Authentication" in text


def test_key_made_on_the_box_matches_and_daemon_can_read_it(host):
    key = host.file(KEY)
    assert key.user == "root" and key.group == "medtls"
    assert key.mode & 0o007 == 0  # nobody else
    # key_type from medtls_certificates_acme_options
    assert "secp384r1" in host.check_output(f"openssl pkey -in {KEY} -noout -text")
    cert_pub = host.check_output(f"openssl x509 -in {CHAIN} -noout -pubkey")
    key_pub = host.check_output(f"openssl pkey -in {KEY} -pubout")
    assert cert_pub == key_pub
    assert host.file(f"{STATE}/live").is_symlink  # generations swapped atomically


def test_daemon_serves_with_the_enrolled_certificate(host):
    assert host.service("medtls.service").is_running
    served = host.check_output(
        "echo | openssl s_client -connect 127.0.0.1:12762 2>/dev/null | openssl x509 -noout -serial"
    )
    assert served == host.check_output(f"openssl x509 -in {CHAIN} -noout -serial")


@pytest.mark.parametrize("timer", ["medtls-enroll.timer"])
def test_timer_enabled_and_scheduled(host, timer):
    assert host.service(timer).is_enabled
    assert host.service(timer).is_running
    # Scheduled again after the run the play made (OnUnitActiveSec of a oneshot).
    assert host.check_output(f"systemctl show -P NextElapseUSecMonotonic {timer}") not in ("", "0")


def test_units_verify(host):
    for unit in UNITS:
        # The package's unit (packaging/systemd/) with the role's drop-in, nothing in /etc whole.
        assert not host.file(f"/etc/systemd/system/{unit}").exists
        path = host.check_output(f"systemctl show -P FragmentPath {unit}")
        assert path.endswith(f"/lib/systemd/system/{unit}"), path
        # dpkg knows /lib/systemd/system on a merged /usr, systemd names /usr/lib.
        assert host.run(f"dpkg -S /lib/systemd/system/{unit}").stdout.startswith("medtls:")
        dropin = f"/etc/systemd/system/{unit}.d/medtls-role.conf"
        assert dropin in host.check_output(f"systemctl show -P DropInPaths {unit}")
        out = host.run(f"systemd-analyze verify --man=no {unit}")
        assert out.rc == 0, out.stderr
        assert "medtls-" not in out.stderr, out.stderr  # no warnings about our units


def _der_sha256(host, pem: str) -> str:
    return host.check_output(f"openssl crl -in {pem} -outform DER | sha256sum")


def test_crl_fetch_unit_installs_the_served_crl(host):
    """The sandboxed unit (root without CAP_DAC_OVERRIDE) replaces the seeded CRL (number 01)
    with the newer one served over HTTP and records the result where the schema says."""
    host.run_expect([0], "systemctl start medtls-crl-fetch.service")
    assert _der_sha256(host, CRL) == _der_sha256(host, "/srv/medtls-crl/ca.pem")
    assert host.check_output(f"openssl crl -in {CRL} -noout -crlnumber") != "crlNumber=01"  # seed
    crl = host.file(CRL)
    assert crl.user == "root" and crl.mode == 0o644
    state = host.file(CRL_STATE)
    assert state.user == "root" and state.mode == 0o644
    d = host.file(CRL_STATE.rsplit("/", 1)[0])
    assert (d.user, d.group, d.mode) == ("root", "medtls", 0o750)
    journal = host.check_output("journalctl -u medtls-crl-fetch.service --no-pager -o cat")
    assert f"{CRL_URL}: installed" in journal, journal
    assert host.service("medtls.service").is_running  # reloaded with it, still serving


def test_crl_fetch_status_line(host):
    out = host.check_output(f"medtls crl-fetch --config {CONFIG}")
    assert "crl fetch: last" in out and "1/1 URLs ok" in out, out
    assert f"{CRL_URL}: unchanged" in out, out
    status = host.run(f"medtls status --config {CONFIG}").stdout
    assert "crl fetch: last" in status and "1/1 URLs ok" in status, status


def test_crl_fetch_timer_enabled_and_scheduled(host):
    timer = "medtls-crl-fetch.timer"
    assert host.service(timer).is_enabled and host.service(timer).is_running
    assert host.check_output(f"systemctl show -P NextElapseUSecMonotonic {timer}") not in ("", "0")


def test_crl_fetch_section_keeps_the_default_state_file(host):
    text = host.file(CONFIG).content_string
    assert f"- {CRL_URL}" in text and "state_file" not in text


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("Type", "oneshot"),
        ("User", "root"),
        ("Group", "medtls"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ReadWritePaths", STATE),
        ("CapabilityBoundingSet", "cap_net_bind_service cap_net_admin"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_NETLINK AF_UNIX"),
    ],
)
def test_enroll_unit_sandbox(host, prop, value):
    assert host.check_output(f"systemctl show -P {prop} medtls-enroll.service") == value


def test_enroll_unit_exposure(host):
    out = host.check_output("systemd-analyze security --no-pager medtls-enroll.service")
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    assert score <= 2.5, out  # 2.1 today


def test_next_run_is_a_no_op_before_renewal_is_due(host):
    before = host.check_output(f"readlink {STATE}/live")
    host.run_expect([0], "systemctl start medtls-enroll.service")
    assert host.check_output(f"readlink {STATE}/live") == before
    assert host.service("medtls.service").is_running
