"""One record per loaded certificate and CRL, built once when a generation is validated."""

from __future__ import annotations

import hashlib
import time

from conftest import box_config, write_yaml
from medtls.config import load_config
from medtls.core import certinfo
from medtls.core.certparse import pem_certificates
from medtls.tls.material import validate


def test_validate_lists_every_certificate_and_crl_with_role_and_key(pki, tmp_path):
    crl = pki.crl(tmp_path / "crl.pem", days=2)
    cfg = box_config(pki, "box-a", trust={"ca": str(pki.ca_full), "crl": str(crl)}, outbound=[
        {"name": "pacs", "listen": "127.0.0.1:15999", "address": "127.0.0.1", "port": 104,
         "verify": {"ca": str(pki.ca), "dns": "pacs.test"}},
    ])  # fmt: skip
    rt = validate(load_config(write_yaml(tmp_path / "m.yaml", cfg)), 1)
    got = [(c.role, c.key, c.subject.split(",")[-1]) for c in rt.certificates]
    assert got == [
        ("identity", "identity.certificate", "CN=box-a"),
        ("identity", "identity.certificate", "CN=Test Intermediate CA"),
        ("ca", "trust.ca", "CN=Test Root CA"),
        ("ca", "trust.ca", "CN=Test Intermediate CA"),
        ("crl", "trust.crl", "CN=Test Intermediate CA"),
        ("crl", "trust.crl", "CN=Test Root CA"),
        ("peer-ca", "outbound[0].verify.ca", "CN=Test Root CA"),
    ]
    leaf = rt.certificates[0]
    der = pem_certificates(pki.crt("box-a").read_bytes())[0]  # the leaf; the file may hold a chain
    assert leaf.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    assert leaf.not_after == pki.leaves["box-a"].cert.not_valid_after_utc.timestamp()
    assert leaf.not_after_iso == pki.leaves["box-a"].cert.not_valid_after_utc.isoformat()
    assert 86400 < rt.certificates[4].seconds_left(time.time()) <= 2 * 86400


def test_read_infos_refuses_what_is_not_pem(tmp_path):
    path = tmp_path / "x.pem"
    path.write_text("no certificate here")
    try:
        certinfo.read_infos(certinfo.AUDIT_CA, "audit.ca", str(path))
    except ValueError as e:
        assert "no certificate" in str(e)
    else:
        raise AssertionError("accepted a file without a certificate")
