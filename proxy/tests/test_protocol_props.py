"""Property tests of the DICOM and HL7 first-message readers and the refusal builders
(medtls.core.dicom, medtls.core.hl7, medtls.core.refusal): round trips, caps, and no exception
but the module's own on any input."""

from __future__ import annotations

import hl7 as python_hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from medtls.core import dicom, hl7, refusal
from medtls.core import events as ev

AE_CHARS = st.sampled_from([chr(c) for c in range(0x21, 0x7F) if c != 0x5C])
AE = st.text(AE_CHARS, min_size=1, max_size=16)


def build_rq(called: str, calling: str, items: bytes | None = None, version: int = 1) -> bytes:
    if items is None:
        ctx = b"1.2.840.10008.3.1.1.1"
        items = bytes((0x10, 0)) + len(ctx).to_bytes(2, "big") + ctx
        items += bytes((0x20, 0, 0, 4, 1, 0, 0xFF, 0))
        items += bytes((0x50, 0, 0, 8, 0x51, 0, 0, 4)) + (16384).to_bytes(4, "big")
    body = (
        version.to_bytes(2, "big") + b"\0\0" + called.encode().ljust(16)
        + calling.encode().ljust(16) + bytes(32) + items
    )  # fmt: skip
    return bytes((1, 0)) + len(body).to_bytes(4, "big") + body


@given(AE, AE, st.binary(max_size=64))
def test_associate_rq_round_trip(called, calling, tail):
    pdu = build_rq(called, calling)
    got = dicom.read_associate_rq(pdu + tail)
    assert got == dicom.AssociateRq(1, called.strip(), calling.strip(), len(pdu))


@given(AE, AE, st.data())
def test_a_prefix_is_incomplete_never_wrong(called, calling, data):
    pdu = build_rq(called, calling)
    cut = data.draw(st.integers(0, len(pdu) - 1))
    assert dicom.read_associate_rq(pdu[:cut]) is None


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_garbage_gives_none_a_request_or_dicom_error(data):
    try:
        got = dicom.read_associate_rq(data)
    except dicom.DicomError:
        return
    assert got is None or got.size <= min(len(data), dicom.MAX_ASSOCIATE_RQ)


@given(st.integers(dicom.MAX_ASSOCIATE_RQ - 5, 2**32 - 1))
def test_oversized_request_is_refused_from_its_header(length):
    with pytest.raises(dicom.DicomError, match="limit"):
        dicom.associate_rq_size(bytes((1, 0)) + length.to_bytes(4, "big"))


def test_strict_checks_name_the_problem():
    rq = build_rq("PACS", "CT")
    bad = {
        "not A-ASSOCIATE-RQ": b"\x04" + rq[1:],
        "protocol version": rq[:6] + b"\x00\x02" + rq[8:],
        "called AE title is empty": rq[:10] + b" " * 16 + rq[26:],
        "character": rq[:26] + b"CT\\X".ljust(16) + rq[42:],
        "runs past": build_rq("PACS", "CT", bytes((0x10, 0, 0, 1, 0x31, 0x20, 0, 0, 9))),
        "no presentation context": build_rq("PACS", "CT", bytes((0x10, 0, 0, 1, 0x31))),
        "application context": build_rq("PACS", "CT", bytes((0x20, 0, 0, 0))),
        "item of type": build_rq("PACS", "CT", bytes((0x10, 0, 0, 0, 0x99, 0, 0, 0))),
    }
    for problem, pdu in bad.items():
        with pytest.raises(dicom.DicomError, match=problem):
            dicom.read_associate_rq(pdu)


@given(st.sampled_from(sorted(dicom.RESULTS)), st.sampled_from(sorted(dicom.REASONS)))
def test_associate_rj_holds_its_fields(result, source_reason):
    pdu = dicom.associate_rj(result, *source_reason)
    assert pdu == bytes((3, 0, 0, 0, 0, 4, 0, result)) + bytes(source_reason)


def test_builders_refuse_undefined_values():
    for args in ((3, 1, 1), (1, 1, 4), (2, 3, 0), (1, 4, 1)):
        with pytest.raises(ValueError):
            dicom.associate_rj(*args)
    with pytest.raises(ValueError):
        dicom.a_abort(1, 0)
    assert dicom.a_abort() == bytes((7, 0, 0, 0, 0, 4, 0, 0, 2, 0))


# ---------------------------------------------------------------- HL7

FIELD = st.text(st.sampled_from("ABCXYZ019 .-_"), max_size=12)
SEPS = st.permutations("|^~\\&").map("".join)


def build_msg(seps: str, fields: list[str], control_id: str, version: str = "2.5.1") -> bytes:
    fs, enc = seps[0], seps[1:]
    msh = fs.join(
        ["MSH", enc, *fields[:4], "20260101120000", "", f"ORM{enc[0]}O01{enc[0]}ORM_O01",
         control_id, "P", version]
    )  # fmt: skip
    return (msh + "\rPID" + fs + "1" + fs + fs + "123\r").encode()


@given(SEPS, st.lists(FIELD, min_size=4, max_size=4), st.text("ABC0123456789", min_size=1,
       max_size=20), st.binary(max_size=40))  # fmt: skip
def test_mllp_msh_and_ack_round_trip(seps, fields, control_id, tail):
    msg = build_msg(seps, fields, control_id)
    assert hl7.mllp_frame(hl7.frame(msg) + tail) == msg
    msh = hl7.parse_msh(msg)
    assert (msh.sending_application, msh.sending_facility) == tuple(fields[:2])
    assert (msh.receiving_application, msh.receiving_facility) == tuple(fields[2:4])
    assert (msh.control_id, msh.version, msh.trigger) == (control_id, "2.5.1", "O01")
    answer = hl7.ack(msh, "AR", "medtls: peer refused | ^~\\& it", "MEDTLS1", "20260101")
    back = hl7.parse_msh(answer)
    assert (back.sending_application, back.sending_facility) == tuple(fields[2:4])
    assert (back.receiving_application, back.receiving_facility) == tuple(fields[:2])
    assert back.message_type == seps[1].join(("ACK", "O01", "ACK"))
    assert (back.control_id, back.version, back.processing_id) == ("MEDTLS1", "2.5.1", "P")
    if seps[0] == "|" and seps[1:] == "^~\\&":  # python-hl7 reads the default separators
        parsed = python_hl7.parse(answer.decode())
        assert str(parsed.segment("MSA")[1]) == "AR"
        assert str(parsed.segment("MSA")[2]) == control_id
        assert "peer refused" in str(parsed.segment("MSA")[3])


@given(st.binary(max_size=2000), st.integers(2, 4096))
def test_mllp_frame_respects_its_cap(data, cap):
    try:
        got = hl7.mllp_frame(data, cap)
    except hl7.Hl7Error:
        return
    assert got is None or (len(got) < cap and data[0] == hl7.VT)


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_msh_garbage_gives_msh_or_hl7_error(data):
    try:
        msh = hl7.parse_msh(b"MSH" + data)
    except hl7.Hl7Error:
        return
    hl7.ack(msh, "AE", "x", "1", "2026")  # whatever parsed can be answered


def test_msh_strict_checks_name_the_problem():
    good = build_msg("|^~\\&", ["A", "B", "C", "D"], "42")
    assert hl7.parse_msh(good).control_id == "42"
    bad = {
        "MSH segment": b"PID|1\r",
        "MSH-10": build_msg("|^~\\&", ["A", "B", "C", "D"], ""),
        "not an HL7 v2 version": build_msg("|^~\\&", ["A", "B", "C", "D"], "1", "3.0"),
        "encoding characters": good.replace(b"^~\\&", b"^^\\&", 1),
        "MSH-12": b"MSH|^~\\&|A|B\r",
        "control": good.replace(b"|A|", b"|\x01|", 1),
    }
    for problem, msg in bad.items():
        with pytest.raises(hl7.Hl7Error, match=problem):
            hl7.parse_msh(msg)
    with pytest.raises(hl7.Hl7Error, match="start block"):
        hl7.mllp_frame(b"MSH|")
    with pytest.raises(hl7.Hl7Error, match="carriage return"):
        hl7.mllp_frame(b"\x0bMSH\x1cX")


# ---------------------------------------------------------------- the table

LABELS = [v for k, v in vars(ev).items() if k.isupper() and isinstance(v, str)]


@pytest.mark.parametrize("label", LABELS)
def test_every_result_label_builds_a_valid_refusal(label):
    r = refusal.refusal_for(label)
    assert r.associate_rj()[7:] == bytes((r.result, r.source, r.reason))
    assert r.hl7_code in ("AE", "AR")
    assert label in r.message(label)


def test_transient_and_permanent_causes():
    transient = [ev.CONNECT_FAILED, ev.TIMEOUT, ev.CLOCK_UNSYNCED, ev.CRL_UNUSABLE]
    permanent = [
        ev.UNKNOWN_CA, ev.CERT_EXPIRED, ev.CERT_REVOKED, ev.IDENTITY_MISMATCH, ev.ACL_DENIED,
        ev.PEER_REJECTED, ev.PEER_UNKNOWN_CA, ev.PEER_CERT_EXPIRED, ev.PEER_CERT_REVOKED,
    ]  # fmt: skip
    assert all(refusal.refusal_for(x).transient for x in transient)
    assert not any(refusal.refusal_for(x).transient for x in permanent)
    assert refusal.refusal_for("a_label_from_the_future") is refusal.DEFAULT
