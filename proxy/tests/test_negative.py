"""Failure cases, each asserting what the user sees (client result + one log line)."""

import contextlib
import socket
import ssl
import subprocess
import threading
import time

import pytest
from conftest import box_config, echo_once, free_port
from dicom_util import storescu


@pytest.fixture
def box_b(pki, run_medtls, echo_server):
    """Inbound-only medtls admitting cn=box-a; returns (proc, tls_port)."""

    def start(**over):
        port = free_port()
        cfg = box_config(pki, "box-b", inbound=[{
            "name": "svc", "listen": f"127.0.0.1:{port}", "device_port": echo_server.port,
            "allow": [{"cn": "box-a"}, {"cn": "ris", "ip": "127.0.0.1"}]}], **over)  # fmt: skip
        return run_medtls(cfg, "b", [port]), port

    return start


def s_client(port, *args, data=b"ping\n", timeout=15):
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input=data, capture_output=True, timeout=timeout,
    )  # fmt: skip


def tls_echo(pki, port, cn, payload=b"hello"):
    """TLS client with certificate `cn`; returns the echoed bytes (b'' if refused)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pki.ca)
    if cn:
        ctx.load_cert_chain(pki.crt(cn), pki.key(cn))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw) as s:
                return echo_once(s, payload)
        except (ssl.SSLError, ConnectionResetError):
            return b""


def test_s_client_probe_good_identity(pki, box_b):
    b, port = box_b()
    r = s_client(port, "-cert", str(pki.crt("box-a")), "-key", str(pki.key("box-a")),
                 "-cert_chain", str(pki.crt("box-a")), "-CAfile", str(pki.ca))  # fmt: skip
    out = r.stdout.decode()
    assert "Verify return code: 0 (ok)" in out
    assert "TLSv1.3" in out
    b.wait_log("result=ok")


def test_s_client_acl_allows_second_identity(pki, box_b):
    _b, port = box_b()
    assert tls_echo(pki, port, "ris") == b"hello"


def test_untrusted_ca_client(pki, box_b):
    b, port = box_b()
    assert tls_echo(pki, port, "rogue") == b""
    b.wait_conn("unknown_ca", 'detail="peer certificate not trusted')


def test_identity_not_in_acl(pki, box_b):
    b, port = box_b()
    assert tls_echo(pki, port, "his") == b""  # trusted CA, but cn=his not allowed
    line = b.wait_conn("acl_denied", "direction=inbound")
    assert 'detail="client O=Test Hospital,CN=his' in line and "not allowed on" in line


def test_expired_client_certificate(pki, box_b):
    b, port = box_b()
    assert tls_echo(pki, port, "expired") == b""
    b.wait_conn("cert_expired", 'detail="peer certificate has expired"')


def test_client_without_certificate(pki, box_b):
    b, port = box_b()
    assert tls_echo(pki, port, None) == b""
    b.wait_conn("no_certificate")


def test_tls11_client_refused(pki, box_b):
    b, port = box_b()
    r = s_client(port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-cert",
                 str(pki.crt("box-a")), "-key", str(pki.key("box-a")))  # fmt: skip
    assert r.returncode != 0
    assert b"ping" not in r.stdout.split(b"---")[-1]
    b.wait_conn("protocol_version")


def test_plaintext_to_tls_port(box_b):
    b, port = box_b()
    assoc_rq = bytes.fromhex("01000000004400010000") + b"PACS".ljust(16) + b"CT".ljust(16)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(assoc_rq + bytes(60))
        try:
            reply = s.recv(100)
        except ConnectionResetError:
            reply = b""
    assert not reply.startswith(b"\x02")  # never an A-ASSOCIATE-AC from the device
    b.wait_conn("not_tls", 'detail="peer did not speak TLS')


def test_server_identity_mismatch_outbound(pki, run_medtls, box_b):
    _, b_port = box_b()
    a_port = free_port()
    a = run_medtls(box_config(pki, "box-a", outbound=[{
        "name": "far", "address": "127.0.0.1", "tls_port": b_port,
        "listen": f"127.0.0.1:{a_port}", "verify": {"cn": "pacs"}}]), "a", [a_port])  # fmt: skip
    with socket.create_connection(("127.0.0.1", a_port), timeout=10) as s:
        s.sendall(b"secret")
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(10) == b""
    a.wait_conn("identity_mismatch", 'detail="server O=Test Hospital,CN=box-b')


def test_server_from_untrusted_ca_outbound(pki, run_medtls, box_b, tmp_path):
    _, b_port = box_b()
    a_port = free_port()
    a = run_medtls(box_config(pki, "box-a", outbound=[{
        "name": "far", "address": "127.0.0.1", "tls_port": b_port,
        "listen": f"127.0.0.1:{a_port}",
        "verify": {"cn": "box-b", "ca": str(pki.rogue_ca)}}]), "a", [a_port])  # fmt: skip
    r = storescu(a_port)
    assert r.returncode != 0  # the device's DICOM send fails visibly
    a.wait_conn("unknown_ca")


def test_peer_down(pki, run_medtls):
    a_port, dead = free_port(), free_port()
    a = run_medtls(box_config(pki, "box-a", outbound=[{
        "name": "far", "address": "127.0.0.1", "tls_port": dead,
        "listen": f"127.0.0.1:{a_port}", "verify": {"cn": "box-b"}}]), "a", [a_port])  # fmt: skip
    r = storescu(a_port)
    assert r.returncode != 0
    a.wait_conn("connect_failed", f'detail="connect to 127.0.0.1:{dead}: Connection refused"')


def test_peer_resets_mid_transfer(make_pair):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def reset_after_some():
        c, _ = srv.accept()
        got = 0
        while got < 200_000:
            got += len(c.recv(65536))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        c.close()

    t = threading.Thread(target=reset_after_some, daemon=True)
    t.start()
    pair = make_pair(srv.getsockname()[1])
    with (
        socket.create_connection(("127.0.0.1", pair.a_port), timeout=10) as s,
        pytest.raises((ConnectionResetError, BrokenPipeError)),
    ):
        for _ in range(200):  # 50 MB: far more than the buffers hold
            s.sendall(bytes(262144))
        s.shutdown(socket.SHUT_WR)
        s.recv(1)
        raise AssertionError("a reset was reported as a clean end of stream")
    srv.close()
    pair.b.wait_conn("reset", 'detail="server: connection reset by peer"')


def test_slow_loris_handshake_times_out_without_blocking_others(pki, box_b):
    b, port = box_b(limits={"handshake_timeout": 1, "connect_timeout": 3, "drain_timeout": 1})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(b"\x16\x03\x01")  # a ClientHello that never completes
        t0 = time.monotonic()
        assert tls_echo(pki, port, "box-a") == b"hello"  # others are served meanwhile
        slow.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert slow.recv(100) == b""
        assert 0.5 < time.monotonic() - t0 < 4
    b.wait_conn("timeout", 'detail="TLS handshake timed out"')


def test_unknown_destination_transparent_default_deny(pki, run_medtls, echo_server):
    """Transparent listener on loopback: the original destination (getsockname) is the
    listener itself, which no peer entry lists -> refused and logged."""
    out_port, in_port = free_port(), free_port()
    cfg = box_config(pki, "box-a", mode="transparent",
                     listeners={"outbound": out_port, "inbound": in_port,
                                "address": "127.0.0.1"},
                     outbound=[{"name": "pacs", "address": "198.18.0.20", "port": 104,
                                "verify": {"cn": "pacs"}}])  # fmt: skip
    a = run_medtls(cfg, "a", [out_port])
    # The refusal (RST) may come before or after these bytes: either way nothing comes back.
    with (
        socket.create_connection(("127.0.0.1", out_port), timeout=10) as s,
        contextlib.suppress(ConnectionResetError, BrokenPipeError),
    ):
        s.sendall(b"hello")
        assert s.recv(10) == b""
    a.wait_conn(
        "no_route",
        "direction=outbound route=- client=127.0.0.1:",
        f"destination=127.0.0.1:{out_port}",
        'detail="destination not in the outbound',
    )
