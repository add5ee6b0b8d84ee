"""Fresh TLS BIOs after the handshake (and after an idle burst): memory given back, bytes kept."""

import ssl
import time

from medtls.tls import context as tlsctx
from medtls.tls import openssl
from test_lifecycle import TLSClient, daemon_env, wait_for  # noqa: F401 (fixture)


def _contexts(pki):
    def ctx(server, cn):
        return tlsctx.build_context(server, "bcp195", pki.ca, pki.crt(cn), pki.key(cn), None)

    return ctx(True, "box-b"), ctx(False, "box-a")


class End:
    def __init__(self, ctx, server):
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_side=server)

    def send_to(self, other):
        data = self.out.read()
        if data:
            other.inc.write(data)


def _handshake(a, b):
    for _ in range(10):
        done = 0
        for end in (a, b):
            try:
                end.tls.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        a.send_to(b)
        b.send_to(a)
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


def _in_use(end):
    lib = openssl._lib()
    ptr = openssl._ssl_ptr(end.tls)
    return lib.SSL_get_rbio(ptr), lib.SSL_get_wbio(ptr)


def test_renewed_bios_are_used_and_carry_data_both_ways(pki):
    sctx, cctx = _contexts(pki)
    server, client = End(sctx, True), End(cctx, False)
    _handshake(client, server)
    for end in (server, client):
        old = (end.inc, end.out)
        end.inc, end.out = openssl.renew_bios(end.tls, end.inc, end.out)
        assert end.inc is not old[0] and end.out is not old[1]
        assert _in_use(end) == (openssl._bio_ptr(end.inc), openssl._bio_ptr(end.out))
    payload = bytes(range(256)) * 64
    client.tls.write(payload)
    client.send_to(server)
    assert server.tls.read(len(payload) + 1) == payload
    server.tls.write(b"pong")
    server.send_to(client)
    assert client.tls.read(10) == b"pong"


def test_a_bio_holding_bytes_is_kept(pki):
    sctx, cctx = _contexts(pki)
    server, client = End(sctx, True), End(cctx, False)
    _handshake(client, server)
    client.tls.write(b"in flight")
    client.send_to(server)  # ciphertext waits in the server's incoming BIO
    server.tls.write(b"unsent")  # ciphertext waits in the server's outgoing BIO
    inc, out = server.inc, server.out
    server.inc, server.out = openssl.renew_bios(server.tls, server.inc, server.out)
    assert server.inc is inc and server.out is out
    assert server.tls.read(100) == b"in flight"
    server.send_to(client)
    assert client.tls.read(100) == b"unsent"


def test_daemon_renews_after_handshake_and_after_a_quiet_burst(pki, request, monkeypatch):
    from medtls.engine import daemon as daemon_mod
    from medtls.engine import relay

    calls = []

    def counting(sslobj, inc, out):
        calls.append((inc.pending, out.pending))
        return openssl.renew_bios(sslobj, inc, out)

    monkeypatch.setattr(relay, "renew_bios", counting)
    monkeypatch.setattr(daemon_mod, "BIO_RENEW_IDLE", 0.3)
    d, _, port, _ = request.getfixturevalue("daemon_env")
    c = TLSClient(pki, port, "box-a")
    try:
        assert c.echo(b"x" * 70000) == b"x" * 70000  # a burst larger than the handshake
        assert wait_for(lambda: len(calls) >= 1)
        (conn,) = d.conns.values()
        assert not conn.client.handshake_bios
        assert wait_for(lambda: len(calls) >= 2)  # quiet for BIO_RENEW_IDLE after traffic
        assert calls == [(0, 0), (0, 0)]
        assert c.echo(b"after") == b"after"  # the renewed BIOs carry the stream on
        assert wait_for(lambda: len(calls) >= 3)
        time.sleep(0.8)
        assert len(calls) == 3  # one renewal per quiet period, not one per timer tick
    finally:
        c.close()
