"""medtls/tlshello.py on real hellos: two in-memory TLS 1.3 handshakes (OpenSSL through the ssl
module, no sockets), the second offering the first one's ticket."""

import contextlib
import ssl

import pytest
from medtls.core import tlshello
from medtls.tls import context as tlsctx

SERVER_NAME = "box-b.test"


def _contexts(pki):
    def ctx(server, cn):
        return tlsctx.build_context(
            server, "bcp195", pki.ca, pki.crt(cn), pki.key(cn), None, session_lifetime=3600
        )

    server, client = ctx(True, "box-b"), ctx(False, "box-a")
    for c in (server, client):
        c.minimum_version = ssl.TLSVersion.TLSv1_3
    return server, client


def _handshake(server_ctx, client_ctx, session=None):
    """(client's first flight, server's first flight, client SSLObject after a round of data)."""
    bios = [ssl.MemoryBIO() for _ in range(4)]  # client in/out, server in/out
    c = client_ctx.wrap_bio(bios[0], bios[1], server_hostname=SERVER_NAME, session=session)
    s = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    flights = {"client": b"", "server": b""}
    for _ in range(10):
        for obj in (c, s):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
        out_c, out_s = bios[1].read(), bios[3].read()
        flights["client"] = flights["client"] or out_c
        flights["server"] = flights["server"] or out_s
        bios[2].write(out_c)
        bios[0].write(out_s)
        if not out_c and not out_s:
            break
    s.write(b"x")  # the ticket went out with the server's last flight; data carries it in
    bios[0].write(bios[3].read())
    assert c.read(1) == b"x"
    return flights["client"], flights["server"], c


def test_full_then_resumed_handshake_read_from_the_hellos(pki):
    server_ctx, client_ctx = _contexts(pki)
    ch, sh, first = _handshake(server_ctx, client_ctx)
    assert not first.session_reused and first.session.has_ticket
    ch_type, ch_ext = tlshello.hello_extensions(ch)
    sh_type, sh_ext = tlshello.hello_extensions(sh)
    assert (ch_type, sh_type) == (tlshello.CLIENT_HELLO, tlshello.SERVER_HELLO)
    assert 43 in ch_ext and 43 in sh_ext  # supported_versions: the parser found real extensions
    assert tlshello.resumed(ch_ext, sh_ext) == "New"
    assert not tlshello.offers_psk(ch)

    ch2, sh2, second = _handshake(server_ctx, client_ctx, session=first.session)
    assert second.session_reused
    ch2_ext, sh2_ext = tlshello.hello_extensions(ch2)[1], tlshello.hello_extensions(sh2)[1]
    assert tlshello.PRE_SHARED_KEY in ch2_ext and tlshello.PRE_SHARED_KEY in sh2_ext
    assert tlshello.resumed(ch2_ext, sh2_ext) == "Reused"
    assert tlshello.offers_psk(ch2)
    # a server that ignores the offered ticket answers without pre_shared_key
    assert tlshello.resumed(ch2_ext, sh_ext) == "New"

    for cut in (0, 3, 5, 40, len(ch2) // 2):
        assert tlshello.hello_extensions(ch2[:cut]) is None
        assert not tlshello.offers_psk(ch2[:cut])  # incomplete: treated as a full handshake
    assert not tlshello.offers_psk(sh2)  # a ServerHello is not an offer


def test_a_stream_that_is_not_a_tls_hello_is_named():
    with pytest.raises(tlshello.NotTls, match="content type 71"):
        tlshello.hello_extensions(b"GET / HTTP/1.0\r\n\r\n")
    finished = bytes([22, 3, 3, 0, 8, 20, 0, 0, 4]) + bytes(4)
    with pytest.raises(tlshello.NotTls, match="type 20, not a hello"):
        tlshello.hello_extensions(finished)
    assert not tlshello.offers_psk(b"GET / HTTP/1.0\r\n\r\n")
    assert not tlshello.offers_psk(bytes([22, 3, 1, 0, 9, 1, 0, 0, 5, 3, 3, 255, 255, 255]))
