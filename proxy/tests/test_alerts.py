"""TLS alerts both ways (issue 19): what a refused peer hears, and what medtls logs when a peer
refuses it; byte counts and the upstream in the connection line."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess

import pytest
from conftest import box_config, free_port
from dicom_util import CT, DCMTK

VERSIONS = ["-tls1_2", "-tls1_3"]


@contextlib.contextmanager
def s_server(pki, port: int, version: str, ca, cn: str = "pacs"):
    """`openssl s_server -Verify` trusting `ca` for client certificates (one connection)."""
    proc = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1", version,
         "-cert", str(pki.crt(cn)), "-key", str(pki.key(cn)), "-cert_chain", str(pki.crt(cn)),
         "-Verify", "1", "-verify_return_error", "-CAfile", str(ca)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        seen: list[bytes] = []
        for line in iter(proc.stdout.readline, b""):  # s_server prints ACCEPT once it listens
            seen.append(line)
            if line.strip() == b"ACCEPT" or len(seen) > 10:
                break
        assert any(x.strip() == b"ACCEPT" for x in seen), seen
        yield proc
    finally:
        proc.kill()
        proc.wait(5)


def _outbound_box(pki, run_medtls, server_port: int):
    listen = free_port()
    cfg = box_config(
        pki, "box-a",
        outbound=[{"name": "pacs", "address": "127.0.0.1", "tls_port": server_port,
                   "listen": f"127.0.0.1:{listen}", "verify": {"cn": "pacs"}}],
    )  # fmt: skip
    return run_medtls(cfg, "a", [listen]), listen


@pytest.mark.parametrize("version", VERSIONS)
def test_outbound_logs_the_alert_of_a_peer_that_does_not_trust_us(pki, run_medtls, version):
    """The PACS (s_server -Verify with a CA that does not know the box) refuses our
    certificate: the line names its alert, and the bytes the device sent are not delivered."""
    server_port = free_port()
    with s_server(pki, server_port, version, pki.rogue_ca):
        a, listen = _outbound_box(pki, run_medtls, server_port)
        with socket.create_connection(("127.0.0.1", listen), timeout=10) as dev:
            dev.sendall(b"A-ASSOCIATE-RQ" * 10)
            dev.settimeout(10)
            with contextlib.suppress(OSError):
                assert dev.recv(100) == b""
        line = a.wait_conn("peer_unknown_ca", "route=pacs")
    assert 'detail="peer does not trust our certificate: peer sent alert unknown_ca (48)"' in line
    assert " bytes_device_to_lan=0 " in line
    if version == "-tls1_3":  # the request left with our Finished, then the peer refused
        assert " bytes_not_delivered=140 " in line
    assert f" upstream=127.0.0.1:{server_port} " in line


# ---------------------------------------------------------------- inbound: what a client hears


def _inbound_box(pki, run_medtls, device_port: int, **over):
    port = free_port()
    cfg = box_config(
        pki, "box-b",
        inbound=[{"name": "svc", "listen": f"127.0.0.1:{port}", "device_port": device_port,
                  "allow": [{"cn": "box-a"}]}],
        **over,
    )  # fmt: skip
    return run_medtls(cfg, "b", [port]), port


def _s_client(pki, port: int, version: str, cert, key, *extra, ign_eof=True):
    """openssl s_client presenting `cert`; `-ign_eof`: under TLS 1.3 the verdict on the client
    certificate arrives after the client's handshake completed."""
    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", version, "-cert", str(cert),
         "-key", str(key), "-cert_chain", str(cert), "-CAfile", str(pki.ca),
         *(["-ign_eof"] if ign_eof else []), *extra],
        input=b"ping\n", capture_output=True, timeout=20,
    )  # fmt: skip
    return (r.stdout + r.stderr).decode(errors="replace")


# (client certificate, what s_client prints, the connection line's result)
CASES = {
    "acl": ("ris", "alert access denied", "acl_denied"),
    "untrusted": ("rogue", "alert unknown ca", "unknown_ca"),
    "expired": ("expired", "alert certificate expired", "cert_expired"),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_openssl_client_hears_the_alert_of_its_refusal(pki, run_medtls, echo_server, case, version):
    cn, heard, result = CASES[case]
    b, port = _inbound_box(pki, run_medtls, echo_server.port)
    out = _s_client(pki, port, version, pki.crt(cn), pki.key(cn))
    assert heard in out, out
    line = b.wait_conn(result, "route=svc")
    assert "bytes_lan_to_device=0" in line


@pytest.mark.parametrize("version", VERSIONS)
def test_openssl_client_hears_certificate_revoked(pki, run_medtls, echo_server, tmp_path, version):
    crl = pki.crl(tmp_path / "crl.pem", revoked=("box-a",))
    b, port = _inbound_box(
        pki, run_medtls, echo_server.port, trust={"ca": str(pki.ca), "crl": str(crl)}
    )
    out = _s_client(pki, port, version, pki.crt("box-a"), pki.key("box-a"))
    assert "alert certificate revoked" in out, out
    b.wait_conn("cert_revoked", "route=svc")


@pytest.mark.parametrize("version", VERSIONS)
def test_allowed_client_still_served(pki, run_medtls, echo_server, version):
    b, port = _inbound_box(pki, run_medtls, echo_server.port)
    out = _s_client(pki, port, version, pki.crt("box-a"), pki.key("box-a"), ign_eof=False)
    assert "Verify return code: 0 (ok)" in out and "alert" not in out, out
    b.wait_conn("ok", "route=svc", 'peer="O=Test Hospital,CN=box-a')


@pytest.mark.parametrize("version", VERSIONS)
def test_access_denied_without_session_tickets(pki, run_medtls, echo_server, version):
    """tls.session_lifetime: 0 issues no ticket; the refused client still hears access_denied
    (TLS 1.3: this one connection's NewSessionTicket carries the refusal)."""
    b, port = _inbound_box(pki, run_medtls, echo_server.port, tls={"session_lifetime": 0})
    out = _s_client(pki, port, version, pki.crt("ris"), pki.key("ris"))
    assert "alert access denied" in out, out
    line = b.wait_conn("acl_denied", "route=svc")
    assert 'detail="client O=Test Hospital,CN=ris (dns=ris.test, ip=127.0.0.1) not allowed' in line


@pytest.mark.parametrize("version", VERSIONS)
def test_a_ca_certificate_as_client_hears_bad_certificate(
    pki, run_medtls, echo_server, tmp_path, version
):
    """Verified by OpenSSL, refused by the strict identity reader (a CA is no peer)."""
    import hostile
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert = hostile.der(hostile.leaf(pki.inter, key, cns=("box-a",), ca=True))
    chain = hostile.write_chain(tmp_path / "ca-as-client.crt", cert, pki.inter)
    key_file = hostile.write_key(tmp_path / "ca-as-client.key", key)
    b, port = _inbound_box(pki, run_medtls, echo_server.port)
    out = _s_client(pki, port, version, chain, key_file)
    assert "alert bad certificate" in out, out
    b.wait_conn("bad_certificate", "route=svc", "CA certificate")


# ---------------------------------------------------------------- inbound: what DCMTK prints

# A modality whose TLS stack stops at 1.2. DCMTK 3.6.7 sets no maximum version of its own, so
# OpenSSL's configuration caps it; its `+pa` (PS3.15 B.3) against a port with `aes-legacy` is the
# other way to TLS 1.2.
TLS12_ONLY_CNF = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MaxProtocol = TLSv1.2
"""
TLS12_WAYS = {  # name: (box config on top, DCMTK options, DCMTK capped by OpenSSL's config)
    "bcp195-port-tls12-client": ({}, [], True),
    "aes-legacy-port-dcmtk-pa": ({"tls": {"profile": "aes-legacy"}}, ["+pa"], False),
}
# (client certificate, the line DCMTK prints under TLS 1.2, the connection line's result)
DCMTK_CASES = {
    "acl": ("ris", "000b:0c19 TLS error: tlsv1 alert access denied", "acl_denied"),
    "untrusted": ("rogue", "000b:0c18 TLS error: tlsv1 alert unknown ca", "unknown_ca"),
    "expired": ("expired", "000b:0c15 TLS error: sslv3 alert certificate expired", "cert_expired"),
    "revoked": ("box-a", "000b:0c14 TLS error: sslv3 alert certificate revoked", "cert_revoked"),
}
# Under TLS 1.3 the verdict arrives after DCMTK's handshake completed, when it writes its
# A-ASSOCIATE-RQ or reads the answer; DCMTK 3.6.7 reports either without the alert. Which one
# is a race: the refused connection is reset after the alert, and when the reset arrives before
# DCMTK's write, the write fails.
DCMTK_TLS13_LINES = (
    "F: Association Request Failed: 0006:0317 Peer aborted Association (or never connected)",
    "F: Association Request Failed: 0006:031d TCP I/O Error (Connection reset by peer) "
    "occurred in routine: sendAssociationRQTCP",
)


def _dcmtk_refused(pki, run_medtls, echo_server, tmp_path, case, over, *options, tool="echoscu",
                   env=None):  # fmt: skip
    """DCMTK's `tool` with +tls and `case`'s certificate against an inbound port of box-b;
    (DCMTK's output, box-b's connection line)."""
    cn, _, result = DCMTK_CASES[case]
    if case == "revoked":
        crl = pki.crl(tmp_path / "crl.pem", revoked=(cn,))
        over = {**over, "trust": {"ca": str(pki.ca), "crl": str(crl)}}
    b, port = _inbound_box(pki, run_medtls, echo_server.port, **over)
    argv = [DCMTK[tool], "-d", "+tls", str(pki.key(cn)), str(pki.crt(cn)), "+cf", str(pki.ca),
            *options, "-aec", "PACS", "127.0.0.1", str(port),
            *([str(CT)] if tool == "storescu" else [])]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                       env={**os.environ, **(env or {})})  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    line = b.wait_conn(result, "route=svc")
    assert "bytes_lan_to_device=0" in line
    return r.stdout + r.stderr, line


def _tls12(tmp_path, way):
    over, options, capped = TLS12_WAYS[way]
    env = {}
    if capped:
        cnf = tmp_path / "tls12-only.cnf"
        cnf.write_text(TLS12_ONLY_CNF)
        env["OPENSSL_CONF"] = str(cnf)
    return over, options, env


@pytest.mark.parametrize("way", sorted(TLS12_WAYS))
@pytest.mark.parametrize("case", sorted(DCMTK_CASES))
def test_dcmtk_prints_the_alert_under_tls12(pki, run_medtls, echo_server, tmp_path, case, way):
    """TLS 1.2: the alert arrives in DCMTK's handshake, and it prints it."""
    over, options, env = _tls12(tmp_path, way)
    out, _ = _dcmtk_refused(pki, run_medtls, echo_server, tmp_path, case, over, *options, env=env)
    assert f"F: Association Request Failed: {DCMTK_CASES[case][1]}\n" in out, out
    assert "TLSv1.3" not in out, out


def test_dcmtk_storescu_prints_access_denied_under_tls12(pki, run_medtls, echo_server, tmp_path):
    over, options, env = _tls12(tmp_path, "bcp195-port-tls12-client")
    out, _ = _dcmtk_refused(pki, run_medtls, echo_server, tmp_path, "acl", over, *options,
                            tool="storescu", env=env)  # fmt: skip
    assert "F: Association Request Failed: 000b:0c19 TLS error: tlsv1 alert access denied" in out


@pytest.mark.parametrize("case", sorted(DCMTK_CASES))
def test_dcmtk_cannot_print_the_alert_under_tls13(pki, run_medtls, echo_server, tmp_path, case):
    """Pins what DCMTK 3.6.7 prints under TLS 1.3 (its default here): no alert, although one
    was sent (openssl s_client prints it, above). A DCMTK that prints more fails this test:
    then update docs/operations.md ("What a refused LAN peer shows") and security.md section 11."""
    out, _ = _dcmtk_refused(pki, run_medtls, echo_server, tmp_path, case, {})
    assert "Protocol    : TLSv1.3" in out, out
    fatal = [x for x in out.splitlines() if x.startswith("F: ")]
    assert len(fatal) == 1 and fatal[0] in DCMTK_TLS13_LINES, out
    assert "alert" not in out.lower(), out
