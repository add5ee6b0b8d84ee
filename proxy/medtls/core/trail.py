"""The protocol's own names of a connection, for the trail: the calling and called AE titles of
a DICOM A-ASSOCIATE-RQ, the sending/receiving application and facility (MSH-3..6) and message
type (MSH-9) of an HL7 message. Read from the first PDU or message only, from a copy of the bytes
relayed; pure functions, no I/O.

The values come from the wire: every one is reduced to printable ASCII and bounded (MAX_VALUE)
before it reaches a log line, an audit message or `medtls status`. They never become metric
labels (the metrics count them against the configuration instead).
"""

from __future__ import annotations

from medtls.core import dicom, hl7

MAX_VALUE = 64  # characters of one value kept (an AE title has 16; MSH-3 HD a few dozen)
# Field names, in the order the connection line shows them.
DICOM_FIELDS = ("calling_ae", "called_ae")
HL7_FIELDS = ("hl7_from", "hl7_to", "hl7_type")
FIELDS = DICOM_FIELDS + HL7_FIELDS


def clean(text: str, limit: int = MAX_VALUE) -> str:
    """`text` as printable ASCII (anything else becomes '?'), at most `limit` characters."""
    out = "".join(ch if 0x20 <= ord(ch) <= 0x7E else "?" for ch in text[: limit + 1])
    return out if len(out) <= limit else out[: limit - 1] + "~"


def _pair(first: str, second: str) -> str:
    return clean(f"{first}/{second}" if second else first)


def first_names(protocol: str, data: bytes) -> dict[str, str] | None:
    """The names in the first message `data` starts with: {} when the bytes are not a message
    of `protocol` (or `protocol` has no names), None while the first message is incomplete."""
    if protocol == "dicom":
        try:
            rq = dicom.read_associate_rq(data)
        except dicom.DicomError:
            return {}
        if rq is None:
            return None
        return {"calling_ae": clean(rq.calling_ae), "called_ae": clean(rq.called_ae)}
    if protocol == "hl7":
        # The MSH segment is enough: the rest of the message (which may be long) is not needed.
        if not data:
            return None
        if data[0] != hl7.VT:
            return {}
        segment_end = -1
        for stop in (hl7.CR, 0x0A, hl7.FS):
            i = data.find(stop, 1, hl7.MAX_MSH + 2)
            if i > 0 and (segment_end < 0 or i < segment_end):
                segment_end = i
        if segment_end < 0:
            return None if len(data) <= hl7.MAX_MSH + 1 else {}
        try:
            msh = hl7.parse_msh(data[1:segment_end])
        except hl7.Hl7Error:
            return {}
        return {
            "hl7_from": _pair(msh.sending_application, msh.sending_facility),
            "hl7_to": _pair(msh.receiving_application, msh.receiving_facility),
            "hl7_type": clean(msh.message_type),
        }
    return {}


def describe(names: dict[str, str] | None) -> str:
    """The names as one short text (status, audit descriptions): "CT01 -> PACS" or
    "RIS/RAD -> PACS/HOSP ORM^O01"; "" when there are none."""
    if not names:
        return ""
    if "calling_ae" in names:
        return f"{names['calling_ae']} -> {names['called_ae']}"
    return f"{names['hl7_from']} -> {names['hl7_to']} {names['hl7_type']}"
