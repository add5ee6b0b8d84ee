"""The certificate chain medtls sends is built once per context, without the root.

OpenSSL otherwise builds it with a full X509_verify_cert() in every handshake and sends the
self-signed root too, which the peer parses and decodes for nothing (docs/performance.md,
item 44). What the peer needs to verify (leaf and intermediates) is still sent.
"""

import ctypes
import ssl
import subprocess

import pytest
from conftest import box_config, free_port, memory_handshake
from medtls.tls.context import build_context
from medtls.tls.openssl import _lib, _ssl_ptr


def _handshake(server_ctx, client_ctx):
    srv, cli = memory_handshake(server_ctx, client_ctx)
    assert cli.version() == "TLSv1.3" and srv.getpeercert()
    return srv, cli


def _received(obj: ssl.SSLObject) -> int:
    """Certificates the peer sent (SSL_get_peer_cert_chain: a server's view omits the leaf)."""
    lib = _lib()
    lib.SSL_get_peer_cert_chain.argtypes = [ctypes.c_void_p]
    lib.SSL_get_peer_cert_chain.restype = ctypes.c_void_p
    lib.OPENSSL_sk_num.argtypes = [ctypes.c_void_p]
    lib.OPENSSL_sk_num.restype = ctypes.c_int
    n = lib.OPENSSL_sk_num(lib.SSL_get_peer_cert_chain(_ssl_ptr(obj)))
    return n + 1 if obj.server_side else n


def _plain_server(pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(str(pki.ca))
    ctx.load_cert_chain(str(pki.crt("his")), str(pki.key("his")))
    return ctx


@pytest.mark.parametrize(
    ("cert", "ca", "sent"),
    [
        ("box-a-leaf.crt", "ca-full.pem", 2),  # built from trust.ca: leaf + intermediate, no root
        ("box-a.crt", "ca-full.pem", 2),  # the file's own chain, as it is
        ("box-a-leaf.crt", "ca.pem", 1),  # issuer not in trust.ca: the leaf, and it still starts
    ],
)
def test_client_sends_its_chain_without_the_root(pki, cert, ca, sent):
    client = build_context(False, "bcp195", pki.dir / ca, pki.dir / cert, pki.key("box-a"), None)
    server = _plain_server(pki)
    if sent == 1:
        server.load_verify_locations(str(pki.ca_full))  # the peer holds the intermediate
    srv, _ = _handshake(server, client)
    assert _received(srv) == sent


def test_server_chain_verifies_at_a_real_peer_without_the_root(pki, run_medtls, echo_server):
    port = free_port()
    cfg = box_config(
        pki,
        "box-a",
        identity={"certificate": str(pki.dir / "box-a-leaf.crt"), "key": str(pki.key("box-a"))},
        trust={"ca": str(pki.ca_full)},
        inbound=[{"name": "svc", "listen": f"127.0.0.1:{port}", "device_port": echo_server.port,
                  "allow": [{"cn": "his"}]}],
    )  # fmt: skip
    run_medtls(cfg, "b", [port])
    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts", "-verify", "5",
         "-CAfile", str(pki.ca), "-cert", str(pki.crt("his")), "-key", str(pki.key("his"))],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "Verify return code: 0 (ok)" in r.stdout, r.stdout + r.stderr
    assert r.stdout.count("-----BEGIN CERTIFICATE-----") == 2
    assert " 1 s:CN = Test Intermediate CA" in r.stdout
