"""What the modality and the LAN peer see when the box refuses, in transparent mode with the real
kernel: for each outbound cause (PACS/HIS down, wrong identity, PACS/HIS that does not trust the
box, clock not synchronised, CRL stale) the modality's DCMTK echoscu prints the A-ASSOCIATE-RJ and
its reason, pynetdicom sees the same result/source/reason, and its HL7 sender (python-hl7, MLLP to
the HIS route) gets an ACK AE/AR naming the cause with its own control id. An inbound peer refused
by the ACL hears access_denied (openssl s_client); one whose calling AE title is not allowed for
its certificate gets "Calling AE Title Not Recognized" (echoscu +tls). Controls on the same box:
every client succeeds with `protocol` set while nothing is wrong."""

from __future__ import annotations

import subprocess

import hl7
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from medlab import services as sv
from medtls_testpki import CA, HOUR, Issued, make_crl, write_pem

# A clock the box knows to be wrong whatever NTP says (proxy/tests/test_refusals.py does the same).
UNSYNCED_CLOCK = {"require_sync": True, "not_before": "2100-01-01"}
HL7_CONTROL_ID = "LAB0001"  # MSH-10 of sv.HL7_MESSAGE

# (result, source, reason) of the A-ASSOCIATE-RJ -> what DCMTK prints (docs/operations.md)
TRANSIENT_DOWN, TRANSIENT_LOCAL = (2, 3, 1), (2, 3, 2)
PERMANENT_PROVIDER, PERMANENT_USER = (1, 2, 1), (1, 1, 1)
DCMTK_TEXT = {
    TRANSIENT_DOWN: ("Rejected Transient", "Service Provider (Presentation Related)",
                     "Temporary Congestion"),
    TRANSIENT_LOCAL: ("Rejected Transient", "Service Provider (Presentation Related)",
                      "Local Limit Exceeded"),
    PERMANENT_PROVIDER: ("Rejected Permanent", "Service Provider (ACSE Related)", "No Reason"),
    PERMANENT_USER: ("Rejected Permanent", "Service User", "No Reason"),
}  # fmt: skip


@pytest.fixture
def reconfigure(env):
    """Restart medtls with the example configuration changed by `change(cfg)`; the original
    configuration and medtls are back after the test."""
    original = env.config.read_text()

    def apply(change) -> None:
        cfg = yaml.safe_load(original)
        change(cfg)
        env.config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        env.stop_medtls()
        env.start_medtls()

    yield apply
    env.config.write_text(original)
    env.stop_medtls()
    env.start_medtls()


def _route(cfg, name):
    return next(r for r in cfg["outbound"] if r["name"] == name)


def _port(cfg, name):
    return next(p for p in cfg["inbound"] if p["name"] == name)


def _echo_from_modality(env):
    r = sv.echo(env.lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, check=False)
    return r.returncode, r.stdout + r.stderr


def _pynetdicom_from_modality(env) -> dict:
    return sv.pynetdicom_echo(env.lab, "modality", sv.PACS_IP, 104, sv.PACS_AET)


def _hl7_ack_from_modality(env):
    """The modality's HL7 result to the HIS (198.18.0.30:2575): the ACK's MSA segment."""
    r = sv.hl7_send(env.lab, "modality", sv.HIS_IP, 2575, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return hl7.parse(r.stdout.strip().replace("\n", "\r")).segment("MSA")


def _routes(pacs=None, his=None):
    """`protocol: dicom` on the PACS route and `hl7` on the HIS route, each updated with `pacs` /
    `his`."""

    def change(cfg):
        _route(cfg, "pacs").update({"protocol": "dicom", **(pacs or {})})
        _route(cfg, "his").update({"protocol": "hl7", **(his or {})})

    return change


def _assert_modality_rejected(env, rj: tuple[int, int, int]) -> None:
    """DCMTK echoscu and pynetdicom, both from the modality, are refused with `rj`."""
    result, source, reason = DCMTK_TEXT[rj]
    rc, out = _echo_from_modality(env)
    assert rc != 0
    assert "Association Rejected" in out, out
    assert f"Result: {result}, Source: {source}" in out, out
    assert f"Reason: {reason}" in out, out
    got = _pynetdicom_from_modality(env)
    assert got["rejected"], got
    assert (got["result"], got["source"], got["reason"]) == rj, got


def _assert_hl7_refused(env, code: str, *labels: str) -> None:
    msa = _hl7_ack_from_modality(env)
    assert str(msa[1]) == code, str(msa)
    assert str(msa[2]) == HL7_CONTROL_ID, str(msa)
    assert any(f"({label})" in str(msa[3]) for label in labels), str(msa)


def test_pacs_and_his_down_rejected_transient(env, reconfigure):
    reconfigure(_routes())
    rc, out = _echo_from_modality(env)
    assert rc == 0, out  # control: the PACS and the HIS answer every client through the box
    got = _pynetdicom_from_modality(env)
    assert got["established"] and got["echo_status"] == 0, got
    msa = _hl7_ack_from_modality(env)
    assert (str(msa[1]), str(msa[2])) == ("AA", HL7_CONTROL_ID), str(msa)
    reconfigure(_routes({"tls_port": 2763}, {"tls_port": 2577}))  # nobody listens there
    _assert_modality_rejected(env, TRANSIENT_DOWN)
    _assert_hl7_refused(env, "AE", "connect_failed")
    log = env.medtls_log()
    assert "route=pacs" in log and "route=his" in log, log
    assert "result=connect_failed" in log, log


def test_pacs_and_his_with_the_wrong_identity_rejected_permanent(env, reconfigure):
    reconfigure(_routes({"verify": {"cn": "not-the-pacs"}}, {"verify": {"cn": "not-the-his"}}))
    _assert_modality_rejected(env, PERMANENT_PROVIDER)
    _assert_hl7_refused(env, "AR", "identity_mismatch")
    assert "result=identity_mismatch" in env.medtls_log()


def _rogue_identity(env) -> dict:
    """A box identity from a CA neither the PACS nor the HIS trusts."""
    rogue = env.lab.workdir / "rogue-pki"
    ca = CA(rogue, "rogue CA", org="elsewhere", cert_file="ca.crt", key_file="ca.key",
            days=7, not_before_days=-HOUR)  # fmt: skip
    ca.issue("device", "ct-modality", ips=(sv.DEVICE_IP,), days=7, not_before_days=-HOUR)
    return {
        "certificate": str(rogue / "device.crt"), "key": str(rogue / "device.key"),
        "ca": str(rogue / "ca.crt"),
    }  # fmt: skip


def test_pacs_that_distrusts_the_box_rejected_by_service_user(env, reconfigure):
    identity = _rogue_identity(env)

    def change(cfg):
        _routes()(cfg)
        cfg["identity"] = identity

    reconfigure(change)
    _assert_modality_rejected(env, PERMANENT_USER)
    log = env.medtls_log()
    assert "result=peer_unknown_ca" in log or "result=peer_rejected" in log, log


@pytest.fixture
def alerting_his(env):
    """A HIS that refuses an unknown client certificate with a TLS alert (openssl s_server on
    198.18.0.30:2578; the lab's python-hl7 HIS closes without one under TLS 1.3)."""
    cert, key, ca = env.tls("his")
    argv = ["openssl", "s_server", "-accept", f"{sv.HIS_IP}:2578", "-cert", cert, "-key", key,
            "-CAfile", ca, "-Verify", "1", "-verify_return_error", "-quiet"]  # fmt: skip
    proc = env.lab.spawn("pacs", argv, "his-s_server.log", stdin=subprocess.PIPE)
    try:
        env.lab.wait_listen("pacs", 2578, proc=proc, log="his-s_server.log")
        yield 2578
    finally:
        env.lab.stop(proc)


def test_his_that_distrusts_the_box_answers_ack_ar(env, reconfigure, alerting_his):
    # A HIS that refuses with an alert (openssl s_server). One that closes after the TLS 1.3
    # handshake without an alert or a reply (python asyncio's TLS server) still gets the sender a
    # reset, not an ACK: see the closing note of issue 19.
    identity = _rogue_identity(env)
    his_route = {"tls_port": alerting_his}

    def change(cfg):
        _routes(his=his_route)(cfg)
        cfg["identity"] = identity

    reconfigure(change)
    _assert_hl7_refused(env, "AR", "peer_unknown_ca", "peer_rejected")


def test_clock_not_synchronised_rejected_transient(env, reconfigure):
    def change(cfg):
        _routes()(cfg)
        cfg["clock"] = UNSYNCED_CLOCK

    reconfigure(change)
    _assert_modality_rejected(env, TRANSIENT_LOCAL)
    _assert_hl7_refused(env, "AE", "clock_unsynced")
    assert "result=clock_unsynced" in env.medtls_log()


def test_stale_crl_rejected_transient(env, reconfigure):
    lab_ca = Issued(
        x509.load_pem_x509_certificate((env.pki / "ca.crt").read_bytes()),
        serialization.load_pem_private_key((env.pki / "ca.key").read_bytes(), None),
    )
    # The lab CA's CRL, nothing revoked, whose nextUpdate passed yesterday.
    stale = write_pem(env.lab.workdir / "stale-crl.pem", make_crl(lab_ca, days=-1))

    def change(cfg):
        _routes()(cfg)
        cfg["trust"]["crl"] = str(stale)

    reconfigure(change)
    _assert_modality_rejected(env, TRANSIENT_LOCAL)
    _assert_hl7_refused(env, "AE", "crl_unusable")
    assert "result=crl_unusable" in env.medtls_log()


def _s_client(env, cert: str):
    c, k, ca = env.tls(cert)
    r = env.lab.run(
        "mallory" if cert == "mallory" else "pacs",
        ["openssl", "s_client", "-connect", f"{sv.DEVICE_IP}:2762", "-cert", c, "-key", k,
         "-CAfile", ca, "-ign_eof"],
        input="ping\n", timeout=30, check=False,
    )  # fmt: skip
    return r.stdout + r.stderr


def test_inbound_acl_refusal_is_an_access_denied_alert(env):
    out = _s_client(env, "mallory")
    assert "alert access denied" in out, out
    assert "result=acl_denied" in env.medtls_log()


def test_inbound_calling_ae_not_allowed_for_the_certificate(env, reconfigure):
    def change(cfg):
        port = _port(cfg, "dicom")
        port["protocol"] = "dicom"
        port["allow"][0]["calling_ae"] = ["PACS"]

    reconfigure(change)
    lab, tls = env.lab, env.tls("pacs")
    ok = sv.echo(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, tls, check=False, aet="PACS")
    assert ok.returncode == 0, ok.stdout + ok.stderr  # control: the allowed title
    r = sv.echo(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, tls, check=False, aet="LABSCU")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Association Rejected" in out, out
    assert "Result: Rejected Permanent, Source: Service User" in out, out
    assert "Reason: Calling AE Title Not Recognized" in out, out
    # the allowed association's line is written when the box has closed both legs
    sv.wait_for(lambda: "calling_ae=PACS called_ae=CT" in env.medtls_log(), 10, "PACS's line")
    log = env.medtls_log()
    assert "result=calling_ae_refused" in log and "calling_ae=LABSCU called_ae=CT" in log, log


def test_trail_names_in_transparent_mode(env, reconfigure):
    reconfigure(_routes())
    rc, out = _echo_from_modality(env)
    assert rc == 0, out
    # the connection line is written when the box has closed both legs, just after echoscu exits
    names = "calling_ae=LABSCU called_ae=PACS"
    sv.wait_for(lambda: names in env.medtls_log(), 10, f"{names} in the connection line")
