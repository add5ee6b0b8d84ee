"""A CRL in operation: `medtls status` and the metrics show when it is due, a stalled renewal is a
WARNING and an expired CRL is CRITICAL, and a new CRL on disk takes effect without a restart."""

from __future__ import annotations

import contextlib
import time

import pytest

from . import promparse
from .harness import wait_until

ROOT = "O=Test Hospital,CN=Test Root CA"  # the CRL issuer as crlparse renders it


def _crl(pki, path, revoked=(), days=7.0):
    return pki.crl(path, revoked, cas=("root",), days=days)


@pytest.fixture
def crl_box(tmp_path, fresh_pki, box_factory):
    def make(days=7.0, watch=False):
        crl = _crl(fresh_pki, tmp_path / "crl.pem", days=days)
        extra = {"trust": {"ca": str(fresh_pki.ca), "crl": str(crl)}}
        if watch:
            extra["control"] = {"socket": str(tmp_path / "control.sock"), "watch_files": True}
        return box_factory(extra=extra), crl

    return make


def test_status_and_metrics_show_when_the_crl_is_due(crl_box):
    box, crl = crl_box(days=0.5)
    r = box.cli("status")
    assert r.returncode == 1, r.stdout
    assert f"WARNING: CRL of {ROOT} ({crl}) due for renewal in 11h5" in r.stdout, r.stdout
    assert "crl          next update in 11h5" in r.stdout
    fams = promparse.parse(box.scrape())
    from cryptography import x509

    ref = x509.load_pem_x509_crl(crl.read_bytes())  # an independent parser
    labels = {"issuer": ROOT, "path": str(crl)}
    due = promparse.value(fams, "medtls_crl_next_update_timestamp_seconds", **labels)
    assert due == ref.next_update_utc.timestamp()
    issued = promparse.value(fams, "medtls_crl_this_update_timestamp_seconds", **labels)
    assert issued == ref.last_update_utc.timestamp()
    cert_series = fams["medtls_certificate_not_after_timestamp_seconds"]["samples"]
    assert cert_series and not any(("role", "crl") in k for k in cert_series)
    left = promparse.value(fams, "medtls_certificate_expiry_seconds", role="crl",
                           subject=ROOT, path=str(crl))  # deprecated, kept one release  # fmt: skip
    assert 0.45 * 86400 < left <= 0.5 * 86400


def test_an_expired_crl_is_critical(crl_box):
    box, crl = crl_box(days=-1)
    r = box.cli("status")
    assert r.returncode == 2
    assert f"CRITICAL: CRL of {ROOT} ({crl}) EXPIRED 2" in r.stdout, r.stdout
    assert "its peers are refused" in r.stdout
    with contextlib.suppress(OSError), box.connect() as s:
        s.recv(1)
    wait_until(lambda: "result=crl_unusable" in box.log(), what="crl_unusable")


def test_a_new_crl_on_disk_revokes_without_a_restart(fresh_pki, crl_box):
    box, crl = crl_box(watch=True)
    with box.connect() as s:
        s.sendall(b"ping")
        assert s.recv(4) == b"ping"
    time.sleep(1.1)  # a new modification time
    _crl(fresh_pki, crl.with_suffix(".new"), revoked=("pacs",)).replace(crl)
    wait_until(lambda: box.status_json()[1].get("generation") == 2, timeout=8, what="reload")
    with contextlib.suppress(OSError), box.connect() as s:
        s.recv(1)
    wait_until(lambda: "result=cert_revoked" in box.log(), what="cert_revoked")
