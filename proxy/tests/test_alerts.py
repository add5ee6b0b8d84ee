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
