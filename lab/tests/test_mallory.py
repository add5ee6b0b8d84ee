"""DICOM Supplement 31's Mallory, automated: each case also runs a positive control so that it
fails when the protection (TLS, the ACL, the ruleset) is removed, not merely when the lab breaks."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import medtls_testpki as testpki
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from medlab import services as sv
from medlab.dicomfile import PATIENT_ID, PATIENT_NAME, stored_objects
from medlab.mallory import as_pacs, on_path_relay
from medlab.net import tshark


def _stored_with(store, pixels):
    return [o for o in stored_objects(store) if o[2] == pixels]


def test_eavesdrop_capture_has_no_patient_name_or_pixels(env, dicom):
    path, pixels = dicom
    lab = env.lab
    with lab.capture("mallory", "box", "eavesdrop.pcap") as pcap:
        sv.store(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, path)
        sv.store(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, path, env.tls("pacs"))
    assert _stored_with(env.pacs_store, pixels), "outbound C-STORE did not arrive"
    assert _stored_with(env.modality_store, pixels), "inbound C-STORE did not arrive"
    raw = pcap.read_bytes()
    payload = sum(int(x) for x in tshark(pcap, "tcp.len > 0", ("tcp.len",)))
    assert payload > 2 * len(pixels), "the capture missed the transfers (control)"
    assert PATIENT_NAME.encode() not in raw
    assert PATIENT_ID.encode() not in raw
    for off in range(0, len(pixels) - 32, 4096):
        assert pixels[off : off + 32] not in raw, f"pixel bytes at {off} visible on the LAN"
    assert len(tshark(pcap, "tls.handshake.type == 1")) >= 2
    assert tshark(pcap, "tcp.port == 104") == []


def test_tamper_flipped_byte_fails_transfer_and_stores_nothing(env, dicom):
    path, pixels = dicom
    lab = env.lab
    # Control: the same on-path relay without tampering carries the transfer.
    with on_path_relay(lab, sv.PACS_IP, flip_at=None) as log:
        sv.store(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, path)
        assert "relaying" in lab.log(log)
    assert _stored_with(env.pacs_store, pixels)
    before = {o[0] for o in stored_objects(env.pacs_store)}
    with on_path_relay(lab, sv.PACS_IP, flip_at=20000) as log:
        r = sv.store(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, path, check=False)
        time.sleep(0.5)
        assert "flipped byte at offset 20000" in lab.log(log)
    assert r.returncode != 0 or "Failed" in r.stderr + r.stdout, "tampered transfer succeeded"
    new = [o for o in stored_objects(env.pacs_store) if o[0] not in before]
    assert new == [], f"PACS stored something from a tampered transfer: {new[0][0]}"


def test_impersonate_untrusted_or_unlisted_cert_cannot_reach_device(env):
    lab = env.lab
    # Control: the PACS with its own certificate is admitted.
    sv.echo(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, env.tls("pacs"))
    for cert in ("mallory-selfsigned", "mallory"):
        cert_file, key, ca = env.tls(cert)
        r = sv.echo(lab, "mallory", sv.DEVICE_IP, 2762, sv.DEVICE_AET, (cert_file, key, ca), False)
        assert r.returncode != 0, f"{cert}: C-ECHO reached the device"
    time.sleep(0.3)
    log = env.medtls_log()
    assert "198.18.0.66" in log, "medtls did not log Mallory's attempts"


def _reload(env, config_text: str) -> None:
    """Write the configuration and SIGHUP the running medtls; returns once it took effect."""
    needle = "reload: configuration generation"
    before = env.medtls_log().count(needle)
    env.config.write_text(config_text)
    env.medtls.send_signal(signal.SIGHUP)
    sv.wait_for(lambda: env.medtls_log().count(needle) > before, what="reload")


def test_a_stolen_certificate_stops_working_once_revoked(env):
    """The PACS's key leaked (whoever holds it can pass as the PACS, even from its address): once
    its certificate is in trust.crl it gets nobody in, and DCMTK's echoscu hears why."""
    lab = env.lab
    tls = env.tls("pacs")
    sv.echo(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, tls)  # control: the key works
    ca = testpki.Issued(
        cert=x509.load_pem_x509_certificate((env.pki / "ca.crt").read_bytes()),
        key=serialization.load_pem_private_key((env.pki / "ca.key").read_bytes(), None),
    )
    stolen = x509.load_pem_x509_certificate((env.pki / "pacs.crt").read_bytes())
    crl = testpki.write_pem(env.lab.workdir / "crl.pem", testpki.make_crl(ca, [stolen]))
    original = env.config.read_text()
    cfg = yaml.safe_load(original)
    cfg["trust"]["crl"] = str(crl)
    _reload(env, yaml.safe_dump(cfg, sort_keys=False))
    try:
        r = sv.echo(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, tls, check=False)
        assert r.returncode != 0, "C-ECHO with a revoked certificate reached the device"
        # The same certificate is the PACS's server identity: the device's calls stop too.
        r = sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, check=False)
        assert r.returncode != 0, "the device reached a server whose certificate is revoked"
        log = env.medtls_log()
        for direction in ("inbound", "outbound"):
            assert re.search(f"direction={direction} .* result=cert_revoked", log), log[-2000:]
    finally:
        _reload(env, original)
    sv.echo(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, tls)  # control: reload restored it


def test_downgrade_tls10_and_tls11_refused(env):
    lab = env.lab
    cert, key, ca = env.tls("pacs")
    base = ["openssl", "s_client", "-connect", f"{sv.DEVICE_IP}:2762", "-cert", cert,
            "-key", key, "-CAfile", ca, "-msg", "-cipher", "DEFAULT:@SECLEVEL=0"]  # fmt: skip
    ok = lab.run("pacs", [*base, "-tls1_2"], input="", check=False, timeout=20)
    assert "ServerHello" in ok.stdout, "control: TLS 1.2 handshake did not get a ServerHello"
    for flag in ("-tls1", "-tls1_1"):
        r = lab.run("pacs", [*base, flag], input="", check=False, timeout=20)
        assert "ClientHello" in r.stdout, f"{flag}: the client sent no offer (test is void)"
        assert "ServerHello" not in r.stdout, f"{flag}: server accepted the old protocol"
        assert r.returncode != 0


def test_downgrade_outbound_old_tls_server_refused(env):
    """Mallory holds the PACS's real key but speaks only TLS 1.0/1.1: medtls must not talk."""
    lab = env.lab
    cert, key, ca = env.tls("pacs")
    with as_pacs(lab):
        for flag, ok in (("-tls1_2", True), ("-tls1_1", False), ("-tls1", False)):
            log = f"old-tls-server{flag}.log"
            server = ["openssl", "s_server", "-accept", "2762", "-cert", cert, "-key", key,
                      "-CAfile", ca, "-msg", "-cipher", "DEFAULT:@SECLEVEL=0",
                      flag]  # fmt: skip
            proc = lab.spawn("mallory", server, log, stdin=subprocess.PIPE)
            try:
                lab.wait_listen("mallory", 2762, proc=proc, log=log)
                sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, check=False)
                time.sleep(0.3)
            finally:
                lab.stop(proc)
            text = lab.log(log)
            assert "ClientHello" in text, f"{flag}: medtls never reached the server (void test)"
            if ok:
                assert "Finished" in text, f"control {flag}: no completed handshake\n{text}"
            else:
                assert "ServerHello" not in text or "Finished" not in text, (
                    f"{flag}: medtls completed a handshake with an old protocol"
                )


def test_bypass_plain_tcp_never_reaches_device(env):
    lab = env.lab
    probes = [104, 2575, 2762, 45000]
    with lab.capture("modality", "eth0", "bypass.pcap", "host 198.18.0.66") as pcap:
        # Control: Mallory's non-TCP traffic does reach the device leg (the capture works).
        lab.run("mallory", ["ping", "-c", "1", "-W", "2", sv.DEVICE_IP])
        for port in probes:
            r = lab.run("mallory", ["socat", "-u", "/dev/null",
                                    f"TCP:{sv.DEVICE_IP}:{port},connect-timeout=2"],
                        check=False, timeout=10)  # fmt: skip
            if port != 2762:
                assert r.returncode != 0, f"plain TCP to device port {port} connected"
    assert tshark(pcap, "icmp"), "control: Mallory's ping not seen on the device leg"
    assert tshark(pcap, "tcp") == [], "Mallory's TCP reached the device leg"


def test_spoof_pacs_address_without_its_key_gets_nowhere(env, dicom):
    lab = env.lab
    path, pixels = dicom
    with as_pacs(lab):
        # Control: with the PACS's real key Mallory's spoofed address gets through.
        sv.echo(lab, "mallory", sv.DEVICE_IP, 2762, sv.DEVICE_AET, env.tls("pacs"))
        for cert in ("mallory-selfsigned", "mallory"):
            r = sv.echo(lab, "mallory", sv.DEVICE_IP, 2762, sv.DEVICE_AET, env.tls(cert), False)
            assert r.returncode != 0, f"spoofed PACS with {cert} reached the device"
        r = sv.echo(lab, "mallory", sv.DEVICE_IP, 2762, sv.DEVICE_AET, check=False)
        assert r.returncode != 0, "spoofed PACS without TLS reached the device"
        # Outbound: Mallory answers the modality's connection to the PACS address.
        for cert in ("mallory-selfsigned", "mallory", "pacs"):
            store = lab.workdir / f"mallory-store-{cert}"
            store.mkdir(exist_ok=True)
            c, k, ca = env.tls(cert)
            argv = [sv.dcmtk("storescp"), "+tls", k, c, "+cf", ca, "-aet", sv.PACS_AET,
                    "-od", str(store), "2762"]  # fmt: skip
            proc = lab.spawn("mallory", argv, f"mallory-storescp-{cert}.log")
            try:
                lab.wait_listen("mallory", 2762, proc=proc)
                r = sv.store(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, path, check=False)
            finally:
                lab.stop(proc)
            got = _stored_with(store, pixels)
            if cert == "pacs":
                assert got, "control: Mallory with the PACS key did not receive the object"
            else:
                assert not got and r.returncode != 0, f"Mallory ({cert}) received the object"
