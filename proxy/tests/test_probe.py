"""`medtls probe PEER`: the real command against real peers on loopback (explicit mode): a TLS
server of the test PKI (TLS 1.2 and 1.3), DCMTK's `storescp +tls` and an MLLP TLS receiver
(python-hl7). Each case asserts the exit code and what the report says."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading

import hl7 as python_hl7
import pytest
from conftest import MEDTLS, box_config, free_port, write_yaml
from dicom_util import Storescp, loopback_netns
from medtls import probe
from medtls.core import hl7


class TlsPeer:
    """A TLS server on loopback that requires a client certificate from `client_ca`; `mode`
    "hold" keeps the connection open, "hl7" answers the first MLLP frame with an ACK."""

    def __init__(self, pki, cn: str, client_ca, version=ssl.TLSVersion.TLSv1_3, mode="hold"):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(pki.crt(cn)), str(pki.key(cn)))
        self.ctx.load_verify_locations(cafile=str(client_ca))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.minimum_version = self.ctx.maximum_version = version
        self.mode = mode
        self.received: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(20)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        for _ in range(8):  # bounded: a test makes one or two connections
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            raw.settimeout(10)
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as tls:
                    self._handle(tls)
            except (OSError, ssl.SSLError):
                raw.close()

    def _handle(self, tls):
        buf = b""
        while True:
            data = tls.recv(65536)
            if not data:
                return
            buf += data
            if self.mode == "hl7":
                msg = hl7.mllp_frame(buf)
                if msg is not None:
                    self.received.append(msg)
                    ack = python_hl7.parse(msg.decode()).create_ack("AA")
                    tls.sendall(hl7.frame(str(ack).encode()))

    def close(self):
        self.sock.close()


@pytest.fixture
def peers():
    made = []

    def make(*a, **kw):
        p = TlsPeer(*a, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def run_probe(tmp_path, pki, port: int, verify: dict, *extra: str, cn="box-a", protocol="tcp",
              ns=None):  # fmt: skip
    listen = f"127.0.0.1:{free_port()}"
    peer = {"name": "pacs", "address": "127.0.0.1", "tls_port": port, "listen": listen,
            "verify": verify, "protocol": protocol}  # fmt: skip
    cfg = write_yaml(tmp_path / "probe.yaml", box_config(pki, cn, outbound=[peer]))
    argv = [*MEDTLS, "probe", "pacs", "--config", str(cfg), "--timeout", "5", *extra]
    argv = ns.argv(*argv) if ns else argv  # the namespace of the peer (dicom_util.LoopbackNetns)
    text = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    js = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60)
    assert js.returncode == text.returncode, (text.stdout, js.stdout)
    return text, json.loads(js.stdout)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_good_peer_reports_chain_rules_version_and_exit_0(tmp_path, pki, peers, version):
    peer = peers(pki, "pacs", pki.ca, version)
    r, js = run_probe(tmp_path, pki, peer.port, {"cn": "pacs", "ip": "127.0.0.1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert js["outcome"] == "ok"
    assert js["tls"]["version"] == version.name.replace("v1_", "v1.")
    assert js["chain"][0]["subject"].endswith("CN=pacs")
    assert js["chain"][0]["issuer"].endswith("CN=Test Intermediate CA")
    assert js["chain"][0]["ip"] == ["127.0.0.1"] and js["chain"][0]["dns"] == ["pacs.test"]
    assert [(x["rule"], x["ok"]) for x in js["verify"]["rules"]] == [("ip", True), ("cn", True)]
    if version == ssl.TLSVersion.TLSv1_2:
        assert js["peer_accepted_us"] is True
    else:  # no application round trip for a tcp peer: not refused, not proven
        assert js["peer_accepted_us"] is None
        assert "not refused" in r.stdout
    assert "cn pacs: ok" in r.stdout and "result: OK (exit 0)" in r.stdout


@pytest.mark.parametrize(
    ("verify", "rule"),
    [({"cn": "not-pacs"}, "cn"), ({"spki_sha256": "00" * 32}, "spki_sha256")],
)
def test_wrong_pin_names_the_rule_and_exits_5(tmp_path, pki, peers, verify, rule):
    peer = peers(pki, "pacs", pki.ca)
    r, js = run_probe(tmp_path, pki, peer.port, {"ip": "127.0.0.1", **verify})
    assert r.returncode == probe.EXIT[probe.PEER_CERT_REFUSED] == 5, r.stdout
    assert js["outcome"] == "peer_certificate_refused"
    bad = [x for x in js["verify"]["rules"] if not x["ok"]]
    assert [x["rule"] for x in bad] == [rule]
    assert f"verify.{rule}:" in js["detail"] and "MISMATCH" in r.stdout
    assert js["chain"][0]["subject"].endswith("CN=pacs")


def test_untrusted_peer_chain_is_shown_and_exits_5(tmp_path, pki, peers):
    peer = peers(pki, "rogue", pki.ca)
    r, js = run_probe(tmp_path, pki, peer.port, {"ip": "127.0.0.1"})
    assert r.returncode == 5, r.stdout
    assert js["verify"]["chain"]["ok"] is False
    assert "not trusted" in js["detail"]
    assert js["chain"] and js["chain"][0]["issuer"].endswith("CN=Rogue CA")


def test_peer_down_exits_3(tmp_path, pki):
    r, js = run_probe(tmp_path, pki, free_port(), {"ip": "127.0.0.1"})
    assert r.returncode == probe.EXIT[probe.UNREACHABLE] == 3, r.stdout
    assert js["tcp"]["ok"] is False and "refused" in js["tcp"]["error"].lower()
    assert "UNREACHABLE" in r.stdout


def test_not_tls_exits_4(tmp_path, pki):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)

        def answer():
            for _ in range(2):
                with contextlib.suppress(OSError):
                    c, _ = srv.accept()
                    with c:
                        c.recv(4096)
                        c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer, daemon=True).start()
        r, js = run_probe(tmp_path, pki, srv.getsockname()[1], {"ip": "127.0.0.1"})
    assert r.returncode == probe.EXIT[probe.HANDSHAKE_FAILED] == 4, r.stdout
    assert js["tls"]["category"] == "not_tls"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_peer_that_distrusts_us_exits_6_with_its_alert(tmp_path, pki, peers, version):
    """TLS 1.2: the alert ends the handshake. TLS 1.3: our handshake completes, the refusal
    arrives at the first read."""
    peer = peers(pki, "pacs", pki.rogue_ca, version)
    r, js = run_probe(tmp_path, pki, peer.port, {"cn": "pacs"})
    assert r.returncode == probe.EXIT[probe.WE_ARE_REFUSED] == 6, r.stdout
    assert js["peer_accepted_us"] is False
    assert js["tls"]["alert"]["code"] in (42, 48, 46)  # bad_certificate, unknown_ca, ...
    assert "accepted  NO" in r.stdout
    if version == ssl.TLSVersion.TLSv1_3:
        assert js["tls"]["ok"] is True and js["verify"]["rules"][0]["ok"] is True


def test_unknown_peer_and_bad_config_exit_2(tmp_path, pki):
    cfg = write_yaml(tmp_path / "c.yaml", box_config(pki, "box-a"))
    r = subprocess.run([*MEDTLS, "probe", "nope", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=30)  # fmt: skip
    assert r.returncode == 2 and "no outbound peer 'nope'" in r.stdout
    (tmp_path / "bad.yaml").write_text("mode: sideways\n")
    r = subprocess.run([*MEDTLS, "probe", "x", "--config", str(tmp_path / "bad.yaml")],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 2 and "CONFIG ERROR" in r.stdout


def test_peer_found_by_address_and_port(tmp_path, pki, peers):
    peer = peers(pki, "pacs", pki.ca)
    run_probe(tmp_path, pki, peer.port, {"cn": "pacs"})
    cfg = tmp_path / "probe.yaml"
    r = subprocess.run([*MEDTLS, "probe", f"127.0.0.1:{peer.port}", "--config", str(cfg), "--json"],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0 and json.loads(r.stdout)["route"] == "pacs"


# ------------------------------------------------------------------ DICOM: DCMTK storescp +tls


@pytest.fixture
def ns():
    """DCMTK's storescp listens on every address of its namespace: it and the probe run in a
    namespace of the test alone (dicom_util.LoopbackNetns)."""
    with loopback_netns() as n:
        yield n


@pytest.fixture
def storescp_tls(tmp_path, pki, ns):
    made = []

    def start(client_ca, *options):
        tls = ["+tls", str(pki.key("pacs")), str(pki.crt("pacs")), "+cf", str(client_ca), "-rc"]
        tls += options
        s = Storescp(ns, tmp_path / f"out{len(made)}", free_port(), tls)
        made.append(s)
        return s

    yield start
    for s in made:
        s.stop()


def test_dicom_association_and_c_echo_against_dcmtk(tmp_path, pki, storescp_tls, ns):
    scp = storescp_tls(pki.ca)
    r, js = run_probe(tmp_path, pki, scp.port, {"cn": "pacs"}, "--called-ae", "PACS",
                      "--calling-ae", "CT", protocol="dicom", ns=ns)  # fmt: skip
    assert r.returncode == 0, r.stdout + scp.log.read_text()
    assert js["peer_accepted_us"] is True
    assert js["dicom"]["answer"] == "A-ASSOCIATE-AC"
    assert js["dicom"]["c_echo_status"] == "0x0000 Success" and js["dicom"]["released"]
    assert "CT -> PACS" in r.stdout


def test_dicom_peer_that_distrusts_us_exits_6(tmp_path, pki, storescp_tls, ns):
    scp = storescp_tls(pki.rogue_ca)
    r, js = run_probe(tmp_path, pki, scp.port, {"cn": "pacs"}, "--dicom", ns=ns)
    assert r.returncode == 6, r.stdout
    assert js["peer_accepted_us"] is False


def test_dicom_association_rejected_exits_7_with_the_reason(tmp_path, pki, storescp_tls, ns):
    scp = storescp_tls(pki.ca, "--refuse")  # storescp rejects every association
    r, js = run_probe(tmp_path, pki, scp.port, {"cn": "pacs"}, "--dicom", ns=ns)
    assert r.returncode == probe.EXIT[probe.APPLICATION_REFUSED] == 7, r.stdout
    assert js["dicom"]["answer"] == "A-ASSOCIATE-RJ" and js["peer_accepted_us"] is True
    assert js["dicom"]["reject"].startswith("rejected-permanent, service-user")
    assert "A-ASSOCIATE-RJ: rejected-permanent" in r.stdout


# ------------------------------------------------------------------ HL7: MLLP over TLS


def test_hl7_test_message_is_acked(tmp_path, pki, peers):
    peer = peers(pki, "his", pki.ca, mode="hl7")
    r, js = run_probe(tmp_path, pki, peer.port, {"cn": "his"}, "--hl7-message", protocol="hl7")
    assert r.returncode == 0, r.stdout
    assert js["hl7"]["ack"] == "AA" and js["peer_accepted_us"] is True
    assert js["hl7"]["ack_for"] == js["hl7"]["control_id"]
    msh = hl7.parse_msh(peer.received[0])
    assert msh.message_type == "NMQ^N01^NMQ_N01"


def test_hl7_peer_that_distrusts_us_exits_6(tmp_path, pki, peers):
    peer = peers(pki, "his", pki.rogue_ca, mode="hl7")
    r, js = run_probe(tmp_path, pki, peer.port, {"cn": "his"}, "--hl7-message", protocol="hl7")
    assert r.returncode == 6, r.stdout
    assert js["peer_accepted_us"] is False and not peer.received
