"""Prove the offered protocols and suites of a medtls TLS port with a scanner (testssl)."""

import json
import shutil
import subprocess

import pytest
from conftest import EchoServer, box_config, free_port

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")


@pytest.mark.skipif(not TESTSSL, reason="testssl (Debian package testssl.sh) not installed")
def test_bcp195_modified_offers_exactly_b13(pki, run_medtls, tmp_path):
    echo = EchoServer()
    port = free_port()
    cfg = box_config(pki, "box-a", tls={"profile": "bcp195-modified"}, inbound=[{
        "name": "dicom", "listen": f"127.0.0.1:{port}", "device_port": echo.port,
        "allow": [{"cn": "pacs"}]}])  # fmt: skip
    run_medtls(cfg, "b", [port])
    out = tmp_path / "testssl.json"
    subprocess.run(
        [TESTSSL, "--quiet", "--color", "0", "--mapping", "iana", "--warnings", "off",
         "-p", "-E", "-oj", str(out), f"127.0.0.1:{port}"],
        capture_output=True, timeout=240, check=False,
    )  # fmt: skip
    echo.close()
    findings = {f["id"]: f["finding"] for f in json.loads(out.read_text())}
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert findings[old] == "not offered", old
    assert findings["TLS1_2"] == "offered"
    assert findings["TLS1_3"].startswith("offered")
    suites = {k.split("_x")[0]: set() for k in findings if k.startswith("cipher-tls")}
    for k, v in findings.items():
        if k.startswith("cipher-tls"):
            suites[k.split("_x")[0]].add(v.split()[3])
    assert suites["cipher-tls1_3"] == {
        "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256",
        "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256",
    }  # fmt: skip
    # ECDSA certificate: the ECDHE-ECDSA part of B.13's TLS 1.2 list, nothing else
    assert suites["cipher-tls1_2"] == {
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_CCM",
        "TLS_ECDHE_ECDSA_WITH_AES_256_CCM", "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
        "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8",
    }  # fmt: skip
