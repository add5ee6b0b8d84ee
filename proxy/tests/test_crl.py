"""Certificate revocation (`trust.crl`): a revoked peer is refused in both directions, a CRL that
cannot vouch for the peer's issuer (missing, expired) fails closed, a new CRL takes effect on
reload, and a bad CRL file is an error naming it, never a silent extension of trust."""

from __future__ import annotations

import signal
import subprocess

import medtls_testpki as testpki
import pytest
from conftest import MEDTLS, box_config, free_port, write_yaml
from dicom_util import Storescp, storescu
from test_negative import s_client, tls_echo

ALLOW = [{"cn": "box-a"}, {"cn": "ris"}]


@pytest.fixture
def guarded(pki, run_medtls, echo_server, tmp_path):
    """Inbound medtls (box-b) admitting box-a and ris, checking `trust.crl`; returns
    (medtls, port, crl path)."""

    def start(revoked=(), cas=("inter", "root"), days=7, crl_check="leaf"):
        port = free_port()
        crl = pki.crl(tmp_path / "crl.pem", revoked=revoked, cas=cas, days=days)
        cfg = box_config(pki, "box-b", inbound=[{
            "name": "svc", "listen": f"127.0.0.1:{port}", "device_port": echo_server.port,
            "allow": ALLOW}],
            trust={"ca": str(pki.ca), "crl": str(crl), "crl_check": crl_check})  # fmt: skip
        return run_medtls(cfg, "b", [port]), port, crl

    return start


def test_revoked_client_refused_others_served(pki, guarded):
    b, port, _ = guarded(revoked=("box-a",))
    assert tls_echo(pki, port, "ris") == b"hello"  # same CA, same CRL, not revoked
    assert tls_echo(pki, port, "box-a") == b""
    line = b.wait_conn("cert_revoked", "direction=inbound")
    assert 'detail="peer certificate revoked (trust.crl)"' in line


def test_openssl_client_hears_certificate_revoked(pki, guarded):
    _, port, _ = guarded(revoked=("box-a",))
    r = s_client(
        port,
        "-cert",
        str(pki.crt("box-a")),
        "-key",
        str(pki.key("box-a")),
        "-cert_chain",
        str(pki.crt("box-a")),
        "-CAfile",
        str(pki.ca),
        "-ign_eof",
    )  # fmt: skip  (TLS 1.3: the verdict comes after the handshake)
    assert b"alert certificate revoked" in r.stderr + r.stdout, r.stderr


@pytest.mark.parametrize(
    ("cas", "days", "detail"),
    [
        (("rogue",), 7, "trust.crl: unable to get certificate CRL for the peer's issuer"),
        (("inter", "root"), -1, "trust.crl: CRL has expired for the peer's issuer"),
    ],
    ids=["no-crl-of-the-issuer", "expired-crl"],
)
def test_a_crl_that_cannot_vouch_fails_closed(pki, guarded, cas, days, detail):
    b, port, _ = guarded(cas=cas, days=days)
    assert tls_echo(pki, port, "ris") == b""
    assert f'detail="{detail}"' in b.wait_conn("crl_unusable")


def test_chain_check_also_refuses_a_revoked_intermediate(pki, guarded):
    _, port, _ = guarded(revoked=("inter",))
    assert tls_echo(pki, port, "ris") == b"hello"  # leaf check: the intermediate is not checked
    b, port, _ = guarded(revoked=("inter",), crl_check="chain")
    assert tls_echo(pki, port, "ris") == b""
    b.wait_conn("cert_revoked")


def test_revocation_takes_effect_on_reload(pki, guarded):
    b, port, crl = guarded()
    assert tls_echo(pki, port, "box-a") == b"hello"
    pki.crl(crl, revoked=("box-a",))
    b.proc.send_signal(signal.SIGHUP)
    b.wait_log("configuration generation 2 active")
    assert tls_echo(pki, port, "box-a") == b""
    b.wait_conn("cert_revoked")


def test_revoked_server_refused_outbound(pki, run_medtls, guarded, tmp_path):
    _, b_port, _ = guarded()
    a_port = free_port()
    crl = pki.crl(tmp_path / "a-crl.pem", revoked=("box-b",))
    scp = Storescp(tmp_path / "unused", free_port())
    try:
        a = run_medtls(box_config(pki, "box-a", outbound=[{
            "name": "far", "address": "127.0.0.1", "tls_port": b_port,
            "listen": f"127.0.0.1:{a_port}", "verify": {"cn": "box-b"}}],
            trust={"ca": str(pki.ca), "crl": str(crl)}), "a", [a_port])  # fmt: skip
        assert storescu(a_port).returncode != 0  # the device's DICOM send fails visibly
        a.wait_conn("cert_revoked", "direction=outbound")
    finally:
        scp.stop()


def _check(cfg, tmp_path):
    return subprocess.run(
        [*MEDTLS, "check", "--config", str(write_yaml(tmp_path / "c.yaml", cfg))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_bad_crl_files_are_errors_naming_them(pki, tmp_path):
    cert_in_crl = tmp_path / "with-cert.pem"
    cert_in_crl.write_bytes(pki.crl(tmp_path / "x.pem").read_bytes() + pki.rogue_ca.read_bytes())
    cases = [
        (cert_in_crl, f"trust.crl: {cert_in_crl}: holds a CERTIFICATE block; only X509 CRL blocks "
                      "are allowed"),
        (pki.ca, f"trust.crl: {pki.ca}: holds a CERTIFICATE block"),
        (pki.passphrase, f"trust.crl: {pki.passphrase}: no PEM CRL (-----BEGIN X509 CRL-----)"),
    ]  # fmt: skip
    for path, expected in cases:
        cfg = box_config(pki, "box-b", trust={"ca": str(pki.ca), "crl": str(path)})
        for command in ("check", "run"):
            r = subprocess.run([*MEDTLS, command, "--config",
                                str(write_yaml(tmp_path / "c.yaml", cfg))],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
            assert r.returncode == 1, (command, r.stderr)
            assert any(expected in line for line in r.stderr.splitlines()), (command, r.stderr)
            assert "Traceback" not in r.stderr


def test_check_reports_an_expired_crl_and_warns_of_a_due_one(pki, tmp_path):
    cfg = box_config(pki, "box-b", trust={"ca": str(pki.ca), "crl": str(
        pki.crl(tmp_path / "old.pem", days=-2))})  # fmt: skip
    r = _check(cfg, tmp_path)
    assert r.returncode == 1
    assert "trust.crl: CRL of 'O=Test Hospital,CN=Test Intermediate CA' expired on" in r.stderr
    cfg["trust"]["crl"] = str(pki.crl(tmp_path / "due.pem", days=0.5))
    r = _check(cfg, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning: trust.crl: CRL of 'O=Test Hospital,CN=Test Intermediate CA' is due for " \
           "renewal in 11 hours" in r.stderr  # fmt: skip


def test_check_refuses_a_crl_its_configured_ca_did_not_sign(pki, tmp_path):
    forged = testpki.make_crl(testpki.Issued(cert=pki.root.cert, key=pki.rogue.key))
    cfg = box_config(pki, "box-b", trust={"ca": str(pki.ca), "crl": str(
        testpki.write_pem(tmp_path / "forged.pem", forged))})  # fmt: skip
    r = _check(cfg, tmp_path)
    assert r.returncode == 1
    assert "trust.crl: CRL of 'O=Test Hospital,CN=Test Root CA' is not signed by its configured " \
        "CA" in r.stderr  # fmt: skip


def test_resumption_and_crl_do_not_mix(pki, tmp_path):
    cfg = box_config(pki, "box-b", trust={"ca": str(pki.ca), "crl": str(
        pki.crl(tmp_path / "crl.pem"))}, tls={"session_lifetime": 3600})  # fmt: skip
    r = _check(cfg, tmp_path)
    assert r.returncode == 1
    assert ("tls.session_lifetime: must be 0 with trust.crl: a resumed session would skip the "
            "revocation check") in r.stderr  # fmt: skip


def test_crl_facts_read_with_the_stdlib_match_cryptography(pki, tmp_path):
    from cryptography import x509
    from medtls.certparse import CertParseError
    from medtls.crlparse import parse_crl, pem_crls

    ders = pem_crls(pki.crl(tmp_path / "c.pem", revoked=("box-a", "inter")).read_bytes())
    assert len(ders) == 2
    for der in ders:
        ref = x509.load_der_x509_crl(der)
        facts = parse_crl(der)
        assert facts.issuer == ref.issuer.rfc4514_string()
        assert facts.this_update == ref.last_update_utc
        assert facts.next_update == ref.next_update_utc
    with pytest.raises(CertParseError):
        parse_crl(ders[0][:40])


def test_a_broken_crl_on_reload_keeps_the_running_one(pki, guarded):
    b, port, crl = guarded(revoked=("box-a",))
    crl.write_bytes(crl.read_bytes() + pki.rogue_ca.read_bytes())  # a certificate slipped in
    b.proc.send_signal(signal.SIGHUP)
    line = b.wait_log("reload rejected")
    assert f"trust.crl: {crl}: holds a CERTIFICATE block" in line
    assert tls_echo(pki, port, "ris") == b"hello"  # the running generation still serves...
    assert tls_echo(pki, port, "box-a") == b""  # ...and still revokes
