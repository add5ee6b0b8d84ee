"""TLS session resumption: tickets save the full handshake, never the policy checks."""

import contextlib
import signal
import socket
import ssl
import time

import pytest
import yaml
from conftest import box_config, free_port, memory_handshake, write_yaml
from medtls.tls import context as tlsctx
from medtls.tls import openssl
from medtls_testpki import CA

RESUME = {"profile": "bcp195", "session_lifetime": 3600}


class Client:
    """A TLS client that keeps one context, so a session from one connection fits the next."""

    def __init__(self, ca, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.load_verify_locations(ca)
        self.ctx.load_cert_chain(cert, key)

    def echo(self, port, session=None, source="127.0.0.1", data=b"ping"):
        """(reply, session after the reply, whether the handshake resumed)."""
        raw = socket.socket()
        raw.settimeout(10)
        raw.bind((source, 0))
        raw.connect(("127.0.0.1", port))
        with self.ctx.wrap_socket(raw, session=session) as s:
            reused = s.session_reused
            got = b""
            try:
                s.sendall(data)
                while len(got) < len(data):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except (OSError, ssl.SSLError):
                pass
            session = s.session
            with contextlib.suppress(OSError, ssl.SSLError):
                s.unwrap()  # close_notify: a clean end (without it, result=truncated)
            return got, session, reused


def inbound(pki, port, echo_port, allow, **over):
    return box_config(pki, "box-b", inbound=[{
        "name": "svc", "listen": f"127.0.0.1:{port}", "device_port": echo_port,
        "allow": allow}], **over)  # fmt: skip


@pytest.fixture
def client(pki):
    return Client(pki.ca, pki.crt("box-a"), pki.key("box-a"))


def test_resumed_session_is_checked_against_the_acl(pki, run_medtls, echo_server, client):
    port = free_port()
    b = run_medtls(inbound(pki, port, echo_server.port, [{"cn": "box-a", "ip": "127.0.0.1"}],
                           tls=RESUME), ready=[port])  # fmt: skip
    reply, first, reused = client.echo(port)
    assert (reply, reused) == (b"ping", False)
    assert first.has_ticket
    reply, second, reused = client.echo(port, session=first)
    assert (reply, reused) == (b"ping", True)
    assert second.id == first.id  # no ticket renewed on resumption (TLS 1.3 id = ticket hash)
    b.wait_conn("ok", "session=resumed")
    # Same certificate, same ticket, another source address: the ACL's ip rule refuses it.
    reply, _, reused = client.echo(port, session=second, source="127.0.0.2")
    assert reused and reply == b""
    line = b.wait_conn("acl_denied", "client=127.0.0.2:")
    assert "session=resumed" in line


def test_by_default_no_ticket_is_issued(pki, run_medtls, echo_server, client):
    port = free_port()
    b = run_medtls(inbound(pki, port, echo_server.port, [{"cn": "box-a"}]), ready=[port])
    reply, first, _ = client.echo(port)
    assert reply == b"ping" and not first.has_ticket
    reply, _, reused = client.echo(port, session=first)
    assert (reply, reused) == (b"ping", False)
    b.wait_conn("ok")
    assert not any("session=resumed" in x for x in b.conn_lines())


def test_reload_invalidates_issued_tickets(pki, run_medtls, echo_server, client, tmp_path):
    port = free_port()
    cfg = inbound(pki, port, echo_server.port, [{"cn": "box-a"}], tls=RESUME)
    b = run_medtls(cfg, ready=[port])
    _, first, _ = client.echo(port)
    assert first.has_ticket
    cfg["inbound"][0]["allow"].append({"cn": "his"})
    write_yaml(b.config, cfg)
    b.signal(signal.SIGHUP)
    b.wait_log("configuration generation 2 active")
    reply, _, reused = client.echo(port, session=first)
    assert (reply, reused) == (b"ping", False)  # a full handshake under the new configuration


def test_peer_certificate_expired_since_the_ticket_is_refused(pki, run_medtls, echo_server,
                                                              tmp_path):  # fmt: skip
    ca = CA(tmp_path / "short", "Short-lived CA", days=30)
    cert, key = ca.issue("lab-analyzer", days=4 / 86400)  # valid for 4 seconds
    port = free_port()
    cfg = inbound(pki, port, echo_server.port, [{"cn": "lab-analyzer"}], tls=RESUME)
    cfg["inbound"][0]["ca"] = str(ca.path)
    b = run_medtls(cfg, ready=[port])
    short = Client(pki.ca, cert, key)
    reply, first, _ = short.echo(port)
    assert reply == b"ping" and first.has_ticket
    time.sleep(max(0.0, ca.leaves["lab-analyzer"].cert.not_valid_after_utc.timestamp()
                   - time.time()) + 1.5)  # fmt: skip
    reply, _, reused = short.echo(port, session=first)
    assert reused and reply == b""
    line = b.wait_conn("cert_expired", "session=resumed")
    assert "resumed session refused" in line


def test_outbound_offers_the_servers_ticket(make_pair, echo_server):
    pair = make_pair(echo_server.port, a_over={"tls": RESUME}, b_over={"tls": RESUME})

    def resumed_flags(n):
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", pair.a_port), timeout=10) as s:
                s.sendall(b"MSH|")
                assert s.recv(16) == b"MSH|"
        deadline = time.monotonic() + 10
        while len(lines := pair.a.conn_lines()) < count + n:
            assert time.monotonic() < deadline, pair.a.log()
            time.sleep(0.05)
        return ["session=resumed" in x for x in lines[count:]]

    count = 0
    assert resumed_flags(3) == [False, True, True]
    pair.b.wait_conn("ok", "session=resumed")
    # The server's reload makes the kept ticket worthless: one refused offer, one full handshake
    # that brings a new ticket, then resumption again.
    count = 3
    cfg = yaml.safe_load(pair.b.config.read_text())
    cfg["inbound"][0]["allow"].append({"cn": "his"})
    write_yaml(pair.b.config, cfg)
    pair.b.signal(signal.SIGHUP)
    pair.b.wait_log("configuration generation 2 active")
    assert resumed_flags(3) == [False, False, True]


def _memory_session(srv_ctx, cli_ctx, session=None):
    """One in-memory handshake (ticket included); returns (client session, resumed?)."""
    _, cli = memory_handshake(srv_ctx, cli_ctx, session)
    with contextlib.suppress(ssl.SSLWantReadError):
        cli.read(1)  # processes the NewSessionTicket
    return cli.session, cli.session_reused


def test_rotated_ticket_keys_refuse_older_tickets(pki):
    def ctx(server, cn):
        return tlsctx.build_context(
            server, "bcp195", pki.ca, pki.crt(cn), pki.key(cn), None, session_lifetime=3600
        )

    srv, cli = ctx(True, "box-b"), ctx(False, "box-a")
    first, _ = _memory_session(srv, cli)
    assert first.has_ticket and first.ticket_lifetime_hint == 3600
    assert _memory_session(srv, cli, first)[1] is True
    openssl.rotate_ticket_keys(srv)
    assert _memory_session(srv, cli, first)[1] is False
