"""Issue 16 defect 7: `medtls check`, start and reload share one validation (material.validate).

Material that can never work (an identity from a CA its peers do not know, one without the
clientAuth usage outbound TLS needs, an EC key under aes-legacy) is refused by `medtls check`
with the very line a reload logs, and a running daemon keeps serving with the old material.
`identity.ca` lets a box present a certificate of another CA than its peers'.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import struct
import subprocess
import time

import medtls_testpki as testpki
import pytest
from conftest import MEDTLS, EchoServer, box_config, echo_once, free_port, write_yaml
from medtls_testpki import write_pem


def medtls(*args, timeout=90):
    return subprocess.run([*MEDTLS, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def extra(pki, tmp_path_factory):
    """Identities the shared PKI lacks: box-a without clientAuth (same intermediate), and box-a
    issued by another root -> intermediate, as a leaf-only file with the CA bundle beside it."""
    d = tmp_path_factory.mktemp("extra")
    noclient = testpki.make_leaf(
        "box-a", pki.inter, org="Test Hospital", ips=("127.0.0.1",), eku=("server",)
    )
    write_pem(d / "noclient.crt", *noclient.fullchain)
    write_pem(d / "noclient.key", noclient.key)
    other_root = testpki.make_ca("Other Root CA", org="Other Vendor", days=3650)
    other_inter = testpki.make_ca("Other Intermediate CA", other_root, org="Other Vendor")
    other = testpki.make_leaf("box-a", other_inter, org="Other Vendor", ips=("127.0.0.1",))
    write_pem(d / "other-leaf.crt", other.cert)
    write_pem(d / "other.key", other.key)
    write_pem(d / "other-ca.pem", other_root.cert, other_inter.cert)
    # box-b's trust: the hospital root and the other vendor's root (not its intermediate)
    write_pem(d / "b-trust.pem", pki.root.cert, other_root.cert)
    write_pem(d / "mixed-ca.pem", pki.root.cert, other_root.cert, other_inter.cert)
    return d


def pair_configs(pki, tmp_path, echo_port):
    """box-a (outbound `far`, with a control socket) -> box-b (inbound `svc`) -> echo."""
    a_port, b_port = free_port(), free_port()
    a = box_config(
        pki,
        "box-a",
        outbound=[
            {
                "name": "far",
                "address": "127.0.0.1",
                "tls_port": b_port,
                "listen": f"127.0.0.1:{a_port}",
                "verify": {"cn": "box-b"},
            }
        ],
        control={"socket": str(tmp_path / "a.sock"), "watch_files": False},
    )
    b = box_config(
        pki,
        "box-b",
        inbound=[
            {
                "name": "svc",
                "listen": f"127.0.0.1:{b_port}",
                "device_port": echo_port,
                "allow": [{"cn": "box-a"}],
            }
        ],
    )
    return a, b, a_port, b_port


def echo_through(port: int, payload: bytes = b"still serving") -> bytes:
    """What came back; b"" when the proxy closed or reset the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        try:
            return echo_once(s, payload)
        except ConnectionResetError:
            return b""


def bad_foreign_ca(pki, extra, cfg):
    cfg["identity"] = {"certificate": str(pki.crt("rogue")), "key": str(pki.key("rogue"))}


def bad_no_client_auth(pki, extra, cfg):
    cfg["identity"] = {
        "certificate": str(extra / "noclient.crt"),
        "key": str(extra / "noclient.key"),
    }


def bad_aes_legacy_ec(pki, extra, cfg):
    cfg["outbound"][0]["profile"] = "aes-legacy"  # box-a's key is EC


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (bad_foreign_ca, "rogue.crt: does not chain to trust.ca"),
        (
            bad_no_client_auth,
            "noclient.crt: extended key usage lacks clientAuth, needed for "
            "outbound TLS routes (outbound[0] 'far')",
        ),
        (
            bad_aes_legacy_ec,
            "outbound[0].profile 'aes-legacy' (used by outbound[0] 'far') "
            "cannot work with this key: no shared cipher",
        ),
    ],
    ids=["foreign-ca", "no-clientauth", "aes-legacy-ec"],
)
def test_check_and_reload_refuse_alike_and_old_material_keeps_serving(
    pki, extra, run_medtls, tmp_path, spoil, expected
):
    echo = EchoServer("echo")
    try:
        a_cfg, b_cfg, a_port, b_port = pair_configs(pki, tmp_path, echo.port)
        run_medtls(b_cfg, "b", [b_port])
        a = run_medtls(a_cfg, "a", [a_port])
        assert echo_through(a_port) == b"still serving"

        spoil(pki, extra, a_cfg)
        write_yaml(a.config, a_cfg)
        check = medtls("check", "--config", str(a.config))
        assert check.returncode == 1, check.stdout
        lines = [x for x in check.stderr.splitlines() if expected in x]
        assert len(lines) == 1, check.stderr

        t0 = time.monotonic()
        reload = medtls("reload", "--socket", str(tmp_path / "a.sock"))
        assert time.monotonic() - t0 < 30  # an answer, not the 60 s wait for one
        assert reload.returncode == 1, reload.stdout
        assert "FAILED, the running configuration stays in force" in reload.stderr
        assert lines[0] in reload.stderr  # the same message, word for word
        a.wait_log(f"reload rejected, keeping generation 1: {lines[0]}")
        # a new connection, so a new handshake with the material that was in force
        assert echo_through(a_port, b"after the bad reload") == b"after the bad reload"
        a.wait_conn("ok", "route=far")
    finally:
        echo.close()


def test_identity_ca_lets_a_box_present_another_vendors_certificate(
    pki, extra, run_medtls, tmp_path
):
    """box-a's certificate comes from the other vendor's CA (leaf only in its file); box-b
    trusts that root. box-a's check fails without identity.ca and passes with it, and the chain
    it sends (built from identity.ca) verifies at box-b."""
    echo = EchoServer("echo")
    try:
        a_cfg, b_cfg, a_port, b_port = pair_configs(pki, tmp_path, echo.port)
        a_cfg["identity"] = {
            "certificate": str(extra / "other-leaf.crt"),
            "key": str(extra / "other.key"),
        }
        b_cfg["trust"] = {"ca": str(extra / "b-trust.pem")}
        path = write_yaml(tmp_path / "a-check.yaml", a_cfg)
        without = medtls("check", "--config", str(path))
        assert without.returncode == 1
        assert "other-leaf.crt: does not chain to trust.ca" in without.stderr
        assert "set identity.ca if another CA issued it" in without.stderr

        a_cfg["identity"]["ca"] = str(extra / "other-ca.pem")
        write_yaml(path, a_cfg)
        ok = medtls("check", "--config", str(path))
        assert ok.returncode == 0, ok.stderr

        run_medtls(b_cfg, "b", [b_port])
        a = run_medtls(a_cfg, "a", [a_port])
        assert echo_through(a_port, b"cross-vendor") == b"cross-vendor"
        a.wait_conn("ok", "route=far")
    finally:
        echo.close()


def test_identity_ca_is_not_trusted_for_peers(pki, extra, run_medtls, tmp_path):
    """identity.ca only builds and checks our own chain: a peer whose certificate comes from
    that CA is still refused when trust.ca does not hold it."""
    echo = EchoServer("echo")
    try:
        a_cfg, b_cfg, a_port, b_port = pair_configs(pki, tmp_path, echo.port)
        # box-b presents the other vendor's box-a certificate; box-a's identity.ca holds that
        # CA (besides its own), but its trust.ca (for peers) is the hospital root only.
        b_cfg["identity"] = {
            "certificate": str(extra / "other-leaf.crt"),
            "key": str(extra / "other.key"),
            "ca": str(extra / "other-ca.pem"),
        }
        b_cfg["trust"] = {"ca": str(extra / "b-trust.pem")}
        a_cfg["identity"]["ca"] = str(extra / "mixed-ca.pem")
        a_cfg["outbound"][0]["verify"] = {"cn": "box-a"}
        run_medtls(b_cfg, "b", [b_port])
        a = run_medtls(a_cfg, "a", [a_port])
        assert echo_through(a_port, b"x") == b""
        a.wait_conn("unknown_ca", "route=far")
    finally:
        echo.close()


# ---------------------------------------------------------------- issue 16 defect 9: labels


def inbound_box(pki, tmp_path, echo_port: int, **over) -> tuple[dict, int]:
    port = free_port()
    cfg = box_config(
        pki,
        "box-b",
        inbound=[
            {
                "name": "svc",
                "listen": f"127.0.0.1:{port}",
                "device_port": echo_port,
                "allow": [{"cn": "box-a"}],
            }
        ],
        **over,
    )
    return cfg, port


def test_they_do_not_trust_us_is_peer_unknown_ca_we_do_not_trust_them_is_unknown_ca(
    pki, make_pair, echo_server
):
    """box-b trusts only the rogue CA (its own identity is checked against identity.ca)."""
    pair = make_pair(
        echo_server.port,
        b_over={"trust": {"ca": str(pki.rogue_ca)}, "identity": {"ca": str(pki.ca)}},
    )
    assert echo_through(pair.a_port, b"x") == b""
    pair.b.wait_conn("unknown_ca", "route=svc")
    line = pair.a.wait_conn("peer_unknown_ca", "route=far")
    assert 'detail="peer does not trust our certificate: peer sent alert unknown_ca (48)"' in line


def test_a_client_certificate_without_client_auth_is_cert_purpose(pki, extra, run_medtls, tmp_path):
    echo = EchoServer("echo")
    try:
        cfg, port = inbound_box(pki, tmp_path, echo.port)
        b = run_medtls(cfg, "b", [port])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(pki.ca)
        ctx.load_cert_chain(extra / "noclient.crt", extra / "noclient.key")
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            contextlib.suppress(ssl.SSLError, OSError),
            ctx.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"x")
            tls.recv(10)
        line = b.wait_conn("cert_purpose", "route=svc")
        assert "unsuitable certificate purpose" in line
    finally:
        echo.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_refused_renegotiation_is_not_peer_rejected(pki, run_medtls, tmp_path, echo_server):
    """A TLS 1.2 client that renegotiates: we refuse (no_renegotiation), it aborts. That is
    no rejection of our certificate."""
    cfg, port = inbound_box(pki, tmp_path, echo_server.port)
    b = run_medtls(cfg, "b", [port])
    client = subprocess.Popen(
        ["openssl", "s_client", "-tls1_2", "-connect", f"127.0.0.1:{port}",
         "-cert", str(pki.crt("box-a")), "-key", str(pki.key("box-a")),
         "-cert_chain", str(pki.crt("box-a")), "-CAfile", str(pki.ca)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(1.0)  # the handshake is done; then ask for a renegotiation
        with contextlib.suppress(BrokenPipeError):
            client.stdin.write(b"R\n")
            client.stdin.flush()
        out = client.communicate(timeout=10)[0].decode(errors="replace")
    finally:
        client.kill()
        client.wait()
    assert "RENEGOTIATING" in out and "no renegotiation" in out
    line = b.wait_conn("reset", "route=svc")
    assert "result=peer_rejected" not in "\n".join(b.conn_lines())
    assert "tls=TLSv1.2" in line


def test_a_reset_during_the_handshake_is_an_audited_authentication_failure(
    pki, run_medtls, tmp_path, echo_server
):
    """The peer sends half a ClientHello and resets: a handshake failure for observers, so
    the audit trail gets its node-authentication failure (it used to be a silent `reset`)."""
    audit_path = tmp_path / "audit.sock"
    audit = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    audit.bind(str(audit_path))
    audit.settimeout(10)
    try:
        cfg, port = inbound_box(
            pki, tmp_path, echo_server.port,
            audit={"transport": "local", "local_socket": str(audit_path), "spool": "off"},
        )  # fmt: skip
        b = run_medtls(cfg, "b", [port])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # half a ClientHello
            time.sleep(0.3)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        line = b.wait_conn("handshake_error", "route=svc")
        assert "during the TLS handshake" in line
        deadline = time.monotonic() + 10
        while True:
            msg = audit.recv(65536).decode(errors="replace")
            if "handshake_error" in msg:
                break
            assert time.monotonic() < deadline, "no audit message for the failed handshake"
        assert 'EventOutcomeIndicator="4"' in msg or 'EventOutcomeIndicator="4"' in msg
    finally:
        audit.close()


# ------------------------------------------- issue 16 defect 9: loader and control socket


def test_reload_of_a_config_the_loader_chokes_on_answers_at_once(
    pki, run_medtls, tmp_path, echo_server
):
    """`device: true` with an inbound entry (explicit mode) raised a TypeError in the loader:
    `medtls reload` waited 60 s for an outcome that never came."""
    sock = str(tmp_path / "b.sock")
    cfg, port = inbound_box(pki, tmp_path, echo_server.port, control={"socket": sock})
    b = run_medtls(cfg, "b", [port])
    for bad in (True, 5):
        cfg["device"] = bad
        write_yaml(b.config, cfg)
        check = medtls("check", "--config", str(b.config))
        assert check.returncode == 1 and "device: must be a mapping" in check.stderr
        assert "Traceback" not in check.stderr
        t0 = time.monotonic()
        r = medtls("reload", "--socket", sock, "--timeout", "30")
        assert time.monotonic() - t0 < 20  # the answer, not a wait for one
        assert r.returncode == 1 and "device: must be a mapping" in r.stderr, r.stderr


def test_a_second_run_refuses_and_leaves_the_running_daemon_its_control_socket(
    pki, run_medtls, tmp_path, echo_server
):
    sock = tmp_path / "b.sock"
    cfg, port = inbound_box(pki, tmp_path, echo_server.port, control={"socket": str(sock)})
    b = run_medtls(cfg, "b", [port])
    second = medtls("run", "--config", str(b.config), timeout=30)
    assert second.returncode == 1
    assert f"control.socket {sock}: another medtls is running" in second.stderr
    assert "Traceback" not in second.stderr
    status = medtls("status", "--socket", str(sock), "--json")
    assert status.returncode != 3 and '"pid"' in status.stdout, status.stderr  # not UNKNOWN
    assert f'"pid": {b.proc.pid}' in status.stdout


def test_a_stale_control_socket_is_replaced_and_a_successors_is_not_removed(
    pki, run_medtls, tmp_path, echo_server
):
    """A socket file nobody answers on (a daemon killed with -9) does not stop a start; and a
    daemon that stops removes its control socket only if the path is still its own."""
    sock = tmp_path / "b.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays, nobody listens
    cfg, port = inbound_box(pki, tmp_path, echo_server.port, control={"socket": str(sock)})
    b = run_medtls(cfg, "b", [port])
    assert medtls("status", "--socket", str(sock)).returncode != 3
    sock.unlink()  # a successor took the path
    successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    successor.bind(str(sock))
    successor.listen(1)
    try:
        assert b.stop() == 0
        assert sock.exists(), "the stopping daemon removed another process's control socket"
    finally:
        successor.close()
