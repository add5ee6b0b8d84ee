"""Issue 16 defect 7: `medtls check`, start and reload share one validation (material.validate).

Material that can never work (an identity from a CA its peers do not know, one without the
clientAuth usage outbound TLS needs, an EC key under aes-legacy) is refused by `medtls check`
with the very line a reload logs, and a running daemon keeps serving with the old material.
`identity.ca` lets a box present a certificate of another CA than its peers'.
"""

from __future__ import annotations

import socket
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
