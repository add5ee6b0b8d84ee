"""Certificate revocation (`trust.crl`): a revoked peer is refused in both directions, a CRL that
cannot vouch for the peer's issuer (missing, expired) fails closed, a new CRL takes effect on
reload, and a bad CRL file is an error naming it, never a silent extension of trust."""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import time

import medtls_testpki as testpki
import pytest
from conftest import MEDTLS, Medtls, box_config, free_port, write_yaml
from cryptography.hazmat.primitives.serialization import Encoding
from dicom_util import storescu
from pki import LEAF, ORG
from test_negative import s_client, tls_echo

ALLOW = [{"cn": "box-a"}, {"cn": "ris"}]


@pytest.fixture
def guarded(pki, run_medtls, echo_server, tmp_path):
    """Inbound medtls (box-b) admitting box-a and ris, checking `trust.crl`; returns
    (medtls, port, crl path)."""

    def start(revoked=(), cas=("inter", "root"), days=7, crl_check="leaf"):
        port = free_port()
        crl = pki.crl(tmp_path / "crl.pem", revoked=revoked, cas=cas, days=days)
        cfg = _guarded_config(pki, port, echo_server.port, crl, crl_check)
        return run_medtls(cfg, "b", [port]), port, crl

    return start


def _guarded_config(pki, port, device_port, crl, crl_check="leaf"):
    return box_config(pki, "box-b", inbound=[{
        "name": "svc", "listen": f"127.0.0.1:{port}", "device_port": device_port,
        "allow": ALLOW}],
        trust={"ca": str(pki.ca), "crl": str(crl), "crl_check": crl_check})  # fmt: skip


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
    a = run_medtls(box_config(pki, "box-a", outbound=[{
        "name": "far", "address": "127.0.0.1", "tls_port": b_port,
        "listen": f"127.0.0.1:{a_port}", "verify": {"cn": "box-b"}}],
        trust={"ca": str(pki.ca), "crl": str(crl)}), "a", [a_port])  # fmt: skip
    assert storescu(a_port).returncode != 0  # the device's DICOM send fails visibly
    a.wait_conn("cert_revoked", "direction=outbound")


def _check(cfg, tmp_path):
    return subprocess.run(
        [*MEDTLS, "check", "--config", str(write_yaml(tmp_path / "c.yaml", cfg))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_bad_crl_files_are_errors_naming_them(pki, tmp_path):
    good = pki.crl(tmp_path / "x.pem").read_bytes()
    cert_in_crl = tmp_path / "with-cert.pem"
    cert_in_crl.write_bytes(good + pki.rogue_ca.read_bytes())
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"\n\n")
    line = good.count(b"\n") + 1
    cases = [
        (cert_in_crl, f"trust.crl: {cert_in_crl}: block 3, line {line}: a CERTIFICATE block; "
                      "only X509 CRL blocks are allowed"),
        (pki.ca, f"trust.crl: {pki.ca}: block 1, line 1: a CERTIFICATE block"),
        (pki.passphrase, f"trust.crl: {pki.passphrase}: block 1, line 1: text outside a block; "
                         "only -----BEGIN X509 CRL----- blocks and blank lines are allowed"),
        (empty, f"trust.crl: {empty}: no PEM CRL (-----BEGIN X509 CRL-----) found"),
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
            assert "s3cret" not in r.stderr  # the file's content is never echoed


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
    from medtls.core.certparse import CertParseError
    from medtls.core.crlparse import parse_crl, pem_crls

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


# A CA certificate slipped into trust.crl, and its leaf with the CN of a real, allowed peer. The
# old guard skipped every PEM block whose body held a '-', while OpenSSL's file loader, which took
# the whole file, stops decoding at that '-' and loaded the certificate as a trust anchor.


@pytest.fixture(scope="module")
def smuggler(pki):
    """The smuggled CA and its leaf CN=box-a (written as pki files `smuggled-box-a.*`), and
    the tail an attacker appends to trust.crl for each way of hiding the CA certificate."""
    ca = testpki.CA(pki.dir, "Smuggled CA", org=ORG, cert_file="smuggled-ca.pem")
    ca.issue("smuggled-box-a", cn="box-a", dns=("box-a.test",), **LEAF)
    der = ca.issuer.cert.public_bytes(Encoding.DER)
    b64 = base64.b64encode(der)
    # DER then padding: OpenSSL decodes up to the '-' (the whole certificate), ignores the rest.
    padded = base64.b64encode(der + bytes(48))
    cut = len(b64) // 4 * 4 + 8

    def block(label: bytes, body: bytes) -> bytes:
        lines = b"\n".join(body[k : k + 64] for k in range(0, len(body), 64))
        return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, lines, label)

    tails = {
        "dash-inside-body": block(b"CERTIFICATE", padded[:cut] + b"-" + padded[cut:]),
        "dash-at-end-of-body": block(b"CERTIFICATE", b64 + b"-"),
        "certificate-under-crl-label": block(b"X509 CRL", b64),
        "lowercase-label": block(b"certificate", b64),
        "plain-certificate": block(b"CERTIFICATE", b64),
    }
    # Its own CRL, a genuine X509 CRL block: with it the smuggled leaf passes the CRL check.
    own_crl = testpki.pem(testpki.make_crl(ca.issuer))
    return {name: own_crl + tail for name, tail in tails.items()}


CERT_BLOCK = r"a CERTIFICATE block; only X509 CRL blocks are allowed"
SMUGGLED = {  # what the error says about block 4 (blocks 1-3 are CRLs)
    "dash-inside-body": CERT_BLOCK,  # the label is refused before the body is read
    "dash-at-end-of-body": CERT_BLOCK,
    "certificate-under-crl-label": r"is not a CRL OpenSSL can read",
    "lowercase-label": r"a certificate block; only X509 CRL blocks are allowed",
    "plain-certificate": CERT_BLOCK,
}


def _smuggled_file(pki, smuggler, case, path):
    pki.crl(path, revoked=("box-a",))
    path.write_bytes(path.read_bytes() + smuggler[case])
    return path


def _names_block_4(text, path, case):
    return re.search(rf"trust\.crl: {re.escape(str(path))}: block 4, line \d+: {SMUGGLED[case]}",
                     text)  # fmt: skip


@pytest.mark.parametrize("case", SMUGGLED)
def test_a_smuggled_ca_is_refused_by_check_and_run(pki, smuggler, echo_server, tmp_path, case):
    crl = _smuggled_file(pki, smuggler, case, tmp_path / "crl.pem")
    port = free_port()
    cfg = write_yaml(tmp_path / "b.yaml", _guarded_config(pki, port, echo_server.port, crl))
    b = Medtls(cfg, tmp_path / "b.log")
    try:
        deadline = time.monotonic() + 20
        while b.proc.poll() is None and "listening" not in b.log():
            assert time.monotonic() < deadline, b.log()
            time.sleep(0.05)
        if b.proc.poll() is None:  # it serves: does it admit the smuggled CA's box-a?
            b.wait_ready([port])
            admitted = tls_echo(pki, port, "smuggled-box-a") == b"hello"
            pytest.fail(f"medtls run started with the smuggled CA; its box-a admitted: {admitted}")
    finally:
        b.stop()
    assert b.proc.returncode == 1, b.log()
    assert _names_block_4(b.log(), crl, case), b.log()
    assert "Traceback" not in b.log()
    r = subprocess.run([*MEDTLS, "check", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 1, r.stdout
    assert _names_block_4(r.stderr, crl, case), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("case", SMUGGLED)
def test_a_smuggled_ca_on_reload_admits_nobody_and_the_crl_keeps_revoking(
    pki, smuggler, guarded, case
):
    b, port, crl = guarded(revoked=("box-a",))
    assert tls_echo(pki, port, "smuggled-box-a") == b""  # unknown CA before the reload
    _smuggled_file(pki, smuggler, case, crl)
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload rejected" not in b.log() and "configuration generation 2" not in b.log():
        assert time.monotonic() < deadline, b.log()
        time.sleep(0.05)
    assert tls_echo(pki, port, "smuggled-box-a") == b""  # the attack: a CA from trust.crl
    assert _names_block_4(b.wait_log("reload rejected"), crl, case), b.log()
    assert tls_echo(pki, port, "ris") == b"hello"  # the running generation still serves...
    assert tls_echo(pki, port, "box-a") == b""  # ...and still revokes
    assert not [x for x in b.conn_lines() if " result=ok " in x and "CN=box-a" in x]


def _crl_pem(pki, tmp_path) -> bytes:
    return pki.crl(tmp_path / "one.pem", cas=("inter",)).read_bytes()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: p[:p.index(b"\n") + 21] + b"-" + p[p.index(b"\n") + 21:],
         "block 1, line 2: '-' at column 21 is not base64"),
        (lambda p: p.replace(b"\n-----END", b"-\n-----END"),
         r"block 1, line \d+: '-' at column \d+ is not base64"),
        (lambda p: p.replace(b"\n", b"\r\n"), None),  # CRLF line ends are fine
        (lambda p: b"\n \n" + p + b"\n\n" + p, None),  # and blank lines between blocks
        (lambda p: p.replace(b"X509 CRL", b"x509 crl"),
         "block 1, line 1: a x509 crl block; only X509 CRL blocks are allowed"),
        (lambda p: b"Certificate Revocation List (CRL):\n" + p,
         "block 1, line 1: text outside a block"),
        (lambda p: p + b"junk\n", r"block 2, line \d+: text outside a block"),
        (lambda p: p.replace(b"-----END X509 CRL-----\n", b""),
         "block 1, line 1: no -----END X509 CRL----- line"),
        (lambda p: p.replace(b"-----END X509 CRL-----", b"-----END CERTIFICATE-----"),
         r"block 1, line \d+: '-----END CERTIFICATE-----' where -----END X509 CRL----- belongs"),
        (lambda p: p.replace(b"-----END X509 CRL-----\n", b"") + p,
         r"block 1, line \d+: a BEGIN line inside the block opened at line 1"),
        (lambda p: p.split(b"\n")[0] + b"\n" + p.split(b"\n")[-2] + b"\n",
         "block 1, line 1: empty block"),
        (lambda p: p.replace(b"\n", b"\nProc-Type: 4,ENCRYPTED\n", 1),
         "block 1, line 2: '-' at column 5 is not base64"),
        (lambda p: p.replace(b"\n", b"\n=AAA\n", 1),
         "block 1, line 2: '=' padding before the end of the line"),
        (lambda p: p.replace(b"\n", b"\nAA==\n", 1), "block 1, line 1: its base64 does not decode"),
        (lambda p: p.replace(b"\n", b"\n\xff\n", 1), "block 1, line 2: byte 0xff at column 1"),
    ],
    ids=["dash-in-a-line", "dash-at-end", "crlf", "blank-lines", "lowercase-label",
         "openssl-crl-text", "trailing-text", "unterminated", "other-end", "begin-in-block",
         "empty-block", "pem-header", "padding-first", "padding-inside", "binary"],
)  # fmt: skip
def test_the_crl_reader_names_the_block_and_line_of_anything_but_crl_blocks(
    pki, tmp_path, damage, expected
):
    from medtls.core.crlparse import crl_blocks

    good = _crl_pem(pki, tmp_path)
    data = damage(good)
    if expected is None:
        assert all(b.der == crl_blocks(good)[0].der for b in crl_blocks(data))
        return
    with pytest.raises(ValueError) as e:
        crl_blocks(data)
    assert re.match(expected, str(e.value)), str(e.value)


def test_only_crls_reach_the_trust_store(pki, tmp_path):
    """What `load_crls` adds: each CRL block, parsed by OpenSSL; never a certificate."""
    import ssl

    from medtls.tls.context import TLSSetupError, load_crls

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_verify_locations(cafile=str(pki.ca))
    load_crls(ctx, pki.crl(tmp_path / "c.pem", cas=("inter", "root", "rogue")), "chain")
    assert ctx.cert_store_stats() == {"x509": 1, "crl": 3, "x509_ca": 1}
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN
    der = base64.b64decode(b"".join(_crl_pem(pki, tmp_path).split(b"\n")[1:-2]))
    for body, why in [(der + b"\0\0", "has bytes after the CRL"),
                      (der[:-1], "is not a CRL OpenSSL can read")]:  # fmt: skip
        bad = tmp_path / "bad.pem"
        bad.write_bytes(_crl_pem_block(body))
        with pytest.raises(TLSSetupError) as e:
            load_crls(ctx, bad)
        assert str(e.value) == f"trust.crl: {bad}: block 1, line 1: {why}"
    assert ctx.cert_store_stats()["x509"] == 1


def _crl_pem_block(der: bytes) -> bytes:
    b64 = base64.encodebytes(der)
    return b"-----BEGIN X509 CRL-----\n" + b64 + b"-----END X509 CRL-----\n"
