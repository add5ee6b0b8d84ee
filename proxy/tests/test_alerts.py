"""TLS alerts both ways (issue 19): what a refused peer hears, and what medtls logs when a peer
refuses it; byte counts and the upstream in the connection line."""

from __future__ import annotations

import contextlib
import socket
import subprocess

import pytest
from conftest import box_config, free_port

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
