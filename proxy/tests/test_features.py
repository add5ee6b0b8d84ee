"""Per-peer features: SNI, passphrase keys, plaintext pass-through, limits, legacy profiles."""

import socket
import ssl
import subprocess
import threading
import time

from conftest import EchoServer, box_config, free_port
from test_lifecycle import inbound_config, try_echo


def _echo_once(t):
    t.sendall(t.recv(100))


def _tls_server(pki, cn, seen, serve=_echo_once):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.crt(cn), pki.key(cn))
    ctx.load_verify_locations(pki.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.sni_callback = lambda s, name, c: seen.append(name)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def run():
        c, _ = srv.accept()
        with ctx.wrap_socket(c, server_side=True) as t:
            serve(t)

    threading.Thread(target=run, daemon=True).start()
    return srv


def _roundtrip(port, data=b"hi"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        return s.recv(100)


def test_sni_per_peer_and_encrypted_key(pki, run_medtls):
    seen = []
    srv = _tls_server(pki, "pacs", seen)
    a_port = free_port()
    cfg = box_config(pki, "box-a", outbound=[{
        "name": "pacs", "address": "127.0.0.1", "tls_port": srv.getsockname()[1],
        "sni": "pacs.hospital.example", "listen": f"127.0.0.1:{a_port}",
        "verify": {"dns": "pacs.test"}}])  # fmt: skip
    cfg["identity"].update(key=str(pki.enc_key), key_passphrase_file=str(pki.passphrase))
    run_medtls(cfg, "a", [a_port])
    assert _roundtrip(a_port) == b"hi"
    assert seen == ["pacs.hospital.example"]
    srv.close()


def test_explicit_plaintext_pass_through_warns(pki, run_medtls):
    echo = EchoServer()
    a_port = free_port()
    a = run_medtls(box_config(pki, "box-a", outbound=[{
        "name": "printer", "address": "127.0.0.1", "tls_port": echo.port, "plaintext": True,
        "listen": f"127.0.0.1:{a_port}"}]), "a", [a_port])  # fmt: skip
    assert _roundtrip(a_port) == b"hi"
    log = a.wait_log("result=ok")
    assert "WARNING outbound[0] (printer): plaintext pass-through to 127.0.0.1:" in log
    assert "tls=plaintext cipher=-" in a.wait_conn("ok")
    echo.close()


def test_max_connections(pki, run_medtls):
    """max_connections counts connections past their handshake (handshakes have their own
    budget: tests/test_limits.py)."""
    from test_lifecycle import TLSClient

    echo = EchoServer()
    port = free_port()
    cfg = inbound_config(pki, port, echo.port, limits={"max_connections": 2})
    b = run_medtls(cfg, "b", [port])
    held = [TLSClient(pki, port, "box-a") for _ in range(2)]
    for c in held:
        assert c.echo() == b"ping"
    assert try_echo(pki, port, "box-a") == b""
    b.wait_conn("max_connections", 'detail="limits.max_connections (2) reached"')
    for c in held:
        c.close()
    deadline = time.monotonic() + 10
    while len([x for x in b.conn_lines() if " result=ok " in x]) < 2:
        assert time.monotonic() < deadline, b.log()
        time.sleep(0.05)
    assert try_echo(pki, port, "box-a") == b"ping"
    echo.close()


def test_silent_inbound_connections_hold_no_slot(pki, run_medtls):
    """A LAN peer (or scanner) that connects to a TLS port and sends nothing does not occupy
    the device's connection slots: the kernel keeps it until data arrives (TCP_DEFER_ACCEPT)."""
    echo = EchoServer()
    port = free_port()
    cfg = inbound_config(pki, port, echo.port, limits={"max_connections": 1})
    b = run_medtls(cfg, "b", [port])
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    time.sleep(0.2)
    assert try_echo(pki, port, "box-a") == b"ping"
    assert "max_connections" not in b.log()
    for s in silent:
        s.close()
    echo.close()


def test_outbound_carries_protocols_whose_server_speaks_first(pki, run_medtls):
    """The device side is not deferred: a device that waits for a greeting gets it."""

    def greet(t):
        t.sendall(b"220 ready\r\n")
        t.recv(100)

    srv = _tls_server(pki, "pacs", [], serve=greet)
    a_port = free_port()
    cfg = box_config(pki, "box-a", outbound=[{
        "name": "pacs", "address": "127.0.0.1", "tls_port": srv.getsockname()[1],
        "listen": f"127.0.0.1:{a_port}", "verify": {"dns": "pacs.test"}}])  # fmt: skip
    run_medtls(cfg, "a", [a_port])
    # Within 3 s: a deferred accept would hold the silent device connection for 7 s.
    with socket.create_connection(("127.0.0.1", a_port), timeout=3) as s:
        assert s.recv(100) == b"220 ready\r\n"
    srv.close()


def test_idle_timeout(pki, run_medtls):
    from test_lifecycle import TLSClient

    echo = EchoServer()
    port = free_port()
    b = run_medtls(box_config(pki, "box-b", limits={"idle_timeout": 1}, inbound=[{
        "name": "svc", "listen": f"127.0.0.1:{port}", "device_port": echo.port,
        "allow": [{"cn": "box-a"}]}]), "b", [port])  # fmt: skip
    c = TLSClient(pki, port, "box-a")
    assert c.echo() == b"ping"
    t0 = time.monotonic()
    c.s.settimeout(5)
    assert c.s.recv(10) == b""  # closed by the box, cleanly
    assert 0.8 < time.monotonic() - t0 < 3
    b.wait_log("result=idle_timeout")
    c.close()
    echo.close()


def test_aes_legacy_profile_is_opt_in_per_port_with_warning(pki, run_medtls):
    echo = EchoServer()
    legacy, modern = free_port(), free_port()
    b = run_medtls(box_config(pki, "box-b", inbound=[
        {"name": "old-modality", "listen": f"127.0.0.1:{legacy}", "device_port": echo.port,
         "profile": "aes-legacy", "allow": [{"cn": "box-a"}]},
        {"name": "svc", "listen": f"127.0.0.1:{modern}", "device_port": echo.port,
         "allow": [{"cn": "box-a"}]}]), "b", [legacy, modern])  # fmt: skip
    assert "WARNING inbound[0] (old-modality): legacy profile 'aes-legacy'" in b.log()

    def probe(port):
        return subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1",
             "-cipher", "AES128-SHA:@SECLEVEL=0", "-cert", str(pki.crt("box-a")),
             "-key", str(pki.key("box-a")), "-cert_chain", str(pki.crt("box-a"))],
            input=b"", capture_output=True, timeout=15,
        ).stdout.decode()  # fmt: skip

    assert "Cipher is AES128-SHA" in probe(legacy)
    assert "Protocol  : TLSv1\n" in probe(legacy)
    assert "Cipher is (NONE)" in probe(modern)  # TLS 1.0 only where explicitly configured
    echo.close()
