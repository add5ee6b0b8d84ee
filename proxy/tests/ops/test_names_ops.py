"""The first message's names in the ops side: AE titles on the ATNA participants (valid against
the RELAX NG schema), `medtls status` (who is connected now), metrics bounded to configuration."""

from __future__ import annotations

import time
from types import SimpleNamespace

from medtls.core.events import ConnInfo
from medtls.ops import audit_xml, health

from . import promparse
from .atna import summary, validate_event
from .test_runtime import _runtime

SRC = audit_xml.Source(audit_source_id="box-1", site_id="site", node_address="198.18.0.10")


def test_ae_titles_on_the_participants_valid_against_the_schema():
    inbound = audit_xml.node_authentication(
        SRC, False, "198.18.0.20", "CN=pacs", "inbound",
        reason="calling_ae_refused: calling AE title MALLORY not allowed",
        calling_ae="MALLORY", called_ae="CT01",
    )  # fmt: skip
    assert validate_event(inbound) == []
    by_role = {p["UserIsRequestor"]: p for p in summary(inbound)["participants"]}
    assert by_role["true"]["AlternativeUserID"] == "AETITLES=MALLORY"  # the peer called
    assert by_role["false"]["AlternativeUserID"] == "AETITLES=CT01"  # the box, for the device
    outbound = audit_xml.node_authentication(
        SRC, True, "198.18.0.20", "CN=pacs", "outbound", calling_ae="CT 01", called_ae="PACS"
    )
    assert validate_event(outbound) == []
    by_role = {p["UserIsRequestor"]: p for p in summary(outbound)["participants"]}
    assert by_role["true"]["AlternativeUserID"] == "AETITLES=CT 01"
    assert by_role["false"]["AlternativeUserID"] == "AETITLES=PACS"
    plain = audit_xml.node_authentication(SRC, True, "198.18.0.20", "CN=pacs", "outbound")
    assert all("AlternativeUserID" not in p for p in summary(plain)["participants"])


def _conn(i: int, direction: str, route: str) -> ConnInfo:
    return ConnInfo(i, direction, route, ("198.18.0.20", 40000 + i), ("198.18.0.10", 11112),
                    time.time())  # fmt: skip


def test_status_says_who_is_connected_and_metrics_count_against_the_configuration(
    tmp_path, fresh_pki
):
    rt, _ = _runtime(tmp_path, fresh_pki, require_sync=False)
    rt.config.inbound = [
        SimpleNamespace(
            name="modality", allow=(SimpleNamespace(calling_ae=("PACS",)),), protocol="dicom"
        )
    ]
    rt.reload_ok(1)
    a, b, c = (
        _conn(1, "inbound", "modality"),
        _conn(2, "inbound", "modality"),
        _conn(3, "outbound", "pacs"),
    )
    for conn in (a, b, c):
        rt.connection_opened(conn)
        rt.tls_established(conn, "TLSv1.3", "TLS_AES_256_GCM_SHA384", "CN=pacs")
    rt.first_message(a, {"calling_ae": "PACS", "called_ae": "CT01"})
    rt.first_message(b, {"calling_ae": 'X"}{', "called_ae": "CT01"})
    rt.first_message(c, {"hl7_from": "RIS/RAD", "hl7_to": "PACS/HOSP", "hl7_type": "ORM^O01"})
    status = rt.status()
    names = {(g["route"], g["names"]): g["count"] for g in status["connected"]}
    assert names == {
        ("modality", "PACS -> CT01"): 1,
        ("modality", 'X"}{ -> CT01'): 1,
        ("pacs", "RIS/RAD -> PACS/HOSP ORM^O01"): 1,
    }
    text = health.render(status)
    assert "connected now:" in text and "CN=pacs  PACS -> CT01" in text
    fams = promparse.parse(rt.registry.render())
    count = "medtls_first_messages_total"
    assert promparse.value(fams, count, direction="inbound", peer="modality", protocol="dicom",
                           ae_known="yes") == 1  # fmt: skip
    assert promparse.value(fams, count, direction="inbound", peer="modality", protocol="dicom",
                           ae_known="no") == 1  # fmt: skip
    assert promparse.value(fams, count, direction="outbound", peer="pacs", protocol="hl7",
                           ae_known="no") == 1  # fmt: skip
    # no label value comes from the wire
    assert 'X\\"}{' not in rt.registry.render() and "PACS/HOSP" not in rt.registry.render()
    rt.connection_closed(a, 10, 10, 0.1, "ok")
    assert ("modality", "PACS -> CT01") not in {
        (g["route"], g["names"]) for g in rt.status()["connected"]
    }
