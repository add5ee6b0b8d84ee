"""What the modality and the LAN peer see when the box refuses, in transparent mode with the real
kernel and DCMTK: PACS down, PACS with the wrong identity, PACS that does not trust the box (DCMTK
echoscu in the modality's namespace prints the A-ASSOCIATE-RJ and its reason), an inbound peer
refused by the ACL (openssl s_client hears access_denied) and an inbound peer whose calling AE
title is not allowed for its certificate (echoscu +tls prints "Calling AE Title Not Recognized").
Each case has a positive control on the same box."""

from __future__ import annotations

import pytest
import yaml
from medlab import services as sv
from medtls_testpki import CA, HOUR


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


def _dicom_route(**extra):
    def change(cfg):
        _route(cfg, "pacs").update({"protocol": "dicom", **extra})

    return change


def test_pacs_down_rejected_transient(env, reconfigure):
    reconfigure(_dicom_route())
    rc, out = _echo_from_modality(env)
    assert rc == 0, out  # control: the PACS answers through the box
    reconfigure(_dicom_route(tls_port=2763))  # nobody listens there
    rc, out = _echo_from_modality(env)
    assert rc != 0
    assert "Association Rejected" in out, out
    assert "Result: Rejected Transient, Source: Service Provider (Presentation Related)" in out
    assert "Reason: Temporary Congestion" in out
    assert "result=connect_failed" in env.medtls_log()


def test_pacs_with_the_wrong_identity_rejected_permanent(env, reconfigure):
    reconfigure(_dicom_route(verify={"cn": "not-the-pacs"}))
    rc, out = _echo_from_modality(env)
    assert rc != 0
    assert "Result: Rejected Permanent, Source: Service Provider (ACSE Related)" in out, out
    assert "result=identity_mismatch" in env.medtls_log()


def test_pacs_that_distrusts_the_box_rejected_by_service_user(env, reconfigure):
    rogue = env.lab.workdir / "rogue-pki"
    ca = CA(rogue, "rogue CA", org="elsewhere", cert_file="ca.crt", key_file="ca.key",
            days=7, not_before_days=-HOUR)  # fmt: skip
    ca.issue("device", "ct-modality", ips=(sv.DEVICE_IP,), days=7, not_before_days=-HOUR)

    def change(cfg):
        _dicom_route()(cfg)
        cfg["identity"] = {
            "certificate": str(rogue / "device.crt"), "key": str(rogue / "device.key"),
            "ca": str(rogue / "ca.crt"),
        }  # fmt: skip

    reconfigure(change)
    rc, out = _echo_from_modality(env)
    assert rc != 0
    assert "Result: Rejected Permanent, Source: Service User" in out, out
    log = env.medtls_log()
    assert "result=peer_unknown_ca" in log or "result=peer_rejected" in log, log


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
    log = env.medtls_log()
    assert "result=calling_ae_refused" in log and "calling_ae=LABSCU called_ae=CT" in log, log
    assert "calling_ae=PACS called_ae=CT" in log


def test_trail_names_in_transparent_mode(env, reconfigure):
    reconfigure(_dicom_route())
    rc, out = _echo_from_modality(env)
    assert rc == 0, out
    assert "calling_ae=LABSCU called_ae=PACS" in env.medtls_log()
