"""ChaCha20-Poly1305 preference for CPUs without AES instructions (the Raspberry Pi 4 case)."""

from conftest import memory_handshake
from medtls.config.profiles import (
    CHACHA20_TLS13,
    PROFILES,
    client_tls13_order,
    cpu_has_aes,
    tls13_suite_list,
)
from medtls.tls.context import SSL_OP_PRIORITIZE_CHACHA, build_context

X86_AES = "processor\t: 0\nflags\t\t: fpu vme sse2 aes avx2 pclmulqdq\n"
PI4 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
PI5 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


def test_cpu_has_aes_from_cpuinfo():
    assert cpu_has_aes(X86_AES)
    assert cpu_has_aes(PI5)
    assert not cpu_has_aes(PI4)
    assert not cpu_has_aes("flags\t: fpu sse2 vaes_like aesx\n")  # whole words only
    assert cpu_has_aes("")  # unknown format: keep the profile's order


def test_client_order_moves_chacha_first_only_without_aes():
    b12 = tls13_suite_list(PROFILES["bcp195"])
    assert client_tls13_order(b12, has_aes=True) == b12
    assert client_tls13_order(b12, has_aes=False) == [
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_128_GCM_SHA256",
    ]
    b13 = tls13_suite_list(PROFILES["bcp195-modified"])
    got = client_tls13_order(b13, has_aes=False)
    assert got[0] == CHACHA20_TLS13 and sorted(got) == sorted(b13)


def test_client_order_never_adds_chacha():
    only_aes = ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"]
    assert client_tls13_order(only_aes, has_aes=False) == only_aes


def _ctx(pki, server, has_aes, monkeypatch):
    monkeypatch.setattr("medtls.tls.context.local_cpu_has_aes", lambda: has_aes)
    cn = "box-a" if server else "his"
    return build_context(server, "bcp195", pki.ca, pki.crt(cn), pki.key(cn), None)


def _handshake(server_ctx, client_ctx) -> str:
    _, cli = memory_handshake(server_ctx, client_ctx)
    return cli.cipher()[0]


def test_server_honours_chacha_first_client(pki, monkeypatch):
    server = _ctx(pki, True, True, monkeypatch)
    no_aes_client = _ctx(pki, False, False, monkeypatch)
    assert _handshake(server, no_aes_client) == CHACHA20_TLS13
    assert server.options & SSL_OP_PRIORITIZE_CHACHA
    aes_client = _ctx(pki, False, True, monkeypatch)
    assert _handshake(server, aes_client) == "TLS_AES_256_GCM_SHA384"
