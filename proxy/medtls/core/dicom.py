"""The DICOM upper layer (PS3.8 9.3) as far as a refusal needs it: read a device's first PDU (an
A-ASSOCIATE-RQ) and build the A-ASSOCIATE-RJ and A-ABORT PDUs. Pure functions, no I/O.

The reader looks at the first PDU only, never at the stream after it, and never at more than
MAX_ASSOCIATE_RQ bytes: the daemon reads that much at most from a device it is refusing.
"""

from __future__ import annotations

from dataclasses import dataclass

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_RJ = 0x03
A_ABORT = 0x07

HEADER = 6  # PDU type, reserved, 4-byte length
# Fixed part of an A-ASSOCIATE-RQ after the header: protocol version, reserved, called and calling
# AE titles, 32 reserved bytes.
RQ_FIXED = 2 + 2 + 16 + 16 + 32
# A real A-ASSOCIATE-RQ is a few KB (DCMTK's storescu with every storage SOP class: ~20 KB);
# anything longer is not read.
MAX_ASSOCIATE_RQ = 65536

# Variable items of an A-ASSOCIATE-RQ (PS3.8 9.3.2.1).
ITEM_APPLICATION_CONTEXT = 0x10
ITEM_PRESENTATION_CONTEXT = 0x20
ITEM_USER_INFORMATION = 0x50
RQ_ITEMS = frozenset({ITEM_APPLICATION_CONTEXT, ITEM_PRESENTATION_CONTEXT, ITEM_USER_INFORMATION})

# A-ASSOCIATE-RJ result and source (PS3.8 table 9-21).
RESULT_PERMANENT = 1
RESULT_TRANSIENT = 2
SOURCE_USER = 1  # DICOM UL service-user
SOURCE_ACSE = 2  # DICOM UL service-provider (ACSE related function)
SOURCE_PRESENTATION = 3  # DICOM UL service-provider (presentation related function)

RESULTS = {RESULT_PERMANENT: "rejected-permanent", RESULT_TRANSIENT: "rejected-transient"}
SOURCES = {
    SOURCE_USER: "service-user",
    SOURCE_ACSE: "service-provider (ACSE)",
    SOURCE_PRESENTATION: "service-provider (presentation)",
}
# (source, reason) -> name, every defined value of table 9-21.
REASONS = {
    (SOURCE_USER, 1): "no-reason-given",
    (SOURCE_USER, 2): "application-context-name-not-supported",
    (SOURCE_USER, 3): "calling-AE-title-not-recognized",
    (SOURCE_USER, 7): "called-AE-title-not-recognized",
    (SOURCE_ACSE, 1): "no-reason-given",
    (SOURCE_ACSE, 2): "protocol-version-not-supported",
    (SOURCE_PRESENTATION, 1): "temporary-congestion",
    (SOURCE_PRESENTATION, 2): "local-limit-exceeded",
}

# A-ABORT source and reason (PS3.8 table 9-26).
ABORT_USER = 0
ABORT_PROVIDER = 2
ABORT_REASONS = {
    0: "reason-not-specified",
    1: "unrecognized-PDU",
    2: "unexpected-PDU",
    4: "unrecognized-PDU-parameter",
    5: "unexpected-PDU-parameter",
    6: "invalid-PDU-parameter-value",
}


class DicomError(ValueError):
    """The bytes are not a well-formed A-ASSOCIATE-RQ (the message says what is wrong)."""


@dataclass(frozen=True, slots=True)
class AssociateRq:
    """What a refusal (and the trail) may use of the device's A-ASSOCIATE-RQ."""

    protocol_version: int
    called_ae: str
    calling_ae: str
    size: int  # bytes of the whole PDU, header included


def associate_rq_size(data: bytes) -> int | None:
    """The size of the A-ASSOCIATE-RQ that `data` starts with, once its header is in (None
    before); DicomError when it is not one or is longer than MAX_ASSOCIATE_RQ."""
    if data and data[0] != A_ASSOCIATE_RQ:
        raise DicomError(f"first PDU has type 0x{data[0]:02x}, not A-ASSOCIATE-RQ (0x01)")
    if len(data) < HEADER:
        return None
    length = int.from_bytes(data[2:6], "big")
    if length < RQ_FIXED:
        raise DicomError(f"A-ASSOCIATE-RQ length {length} is shorter than its fixed fields")
    if HEADER + length > MAX_ASSOCIATE_RQ:
        raise DicomError(f"A-ASSOCIATE-RQ of {HEADER + length} bytes (limit {MAX_ASSOCIATE_RQ})")
    return HEADER + length


def _ae_title(raw: bytes, which: str) -> str:
    # PS3.5 AE: default repertoire without backslash or control characters; leading and
    # trailing spaces are not significant; only spaces is not a title. Trailing NULs are padding
    # some old devices use.
    text = raw.rstrip(b"\x00")
    if any(b < 0x20 or b > 0x7E or b == 0x5C for b in text):
        raise DicomError(f"{which} AE title {raw!r} has a character AE titles may not hold")
    title = text.decode("ascii").strip(" ")
    if not title:
        raise DicomError(f"{which} AE title is empty")
    return title


def read_associate_rq(data: bytes) -> AssociateRq | None:
    """The A-ASSOCIATE-RQ at the start of `data`, None while it is incomplete, DicomError when
    the bytes are not a well-formed one. Bytes after the PDU are not looked at."""
    size = associate_rq_size(data)
    if size is None or len(data) < size:
        return None
    pdu = data[:size]
    version = int.from_bytes(pdu[6:8], "big")
    if not version & 1:
        raise DicomError(f"A-ASSOCIATE-RQ protocol version 0x{version:04x} lacks version 1")
    called = _ae_title(pdu[10:26], "called")
    calling = _ae_title(pdu[26:42], "calling")
    pos = HEADER + RQ_FIXED
    seen: list[int] = []
    while pos < size:
        if pos + 4 > size:
            raise DicomError("A-ASSOCIATE-RQ ends inside an item header")
        kind, length = pdu[pos], int.from_bytes(pdu[pos + 2 : pos + 4], "big")
        if kind not in RQ_ITEMS:
            raise DicomError(f"A-ASSOCIATE-RQ has an item of type 0x{kind:02x}")
        pos += 4 + length
        if pos > size:
            raise DicomError(f"A-ASSOCIATE-RQ item 0x{kind:02x} runs past the PDU")
        seen.append(kind)
    if not seen or seen[0] != ITEM_APPLICATION_CONTEXT:
        raise DicomError("A-ASSOCIATE-RQ does not start with an application context item")
    if ITEM_PRESENTATION_CONTEXT not in seen:
        raise DicomError("A-ASSOCIATE-RQ proposes no presentation context")
    return AssociateRq(version, called, calling, size)


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU; ValueError for values table 9-21 does not define."""
    if result not in RESULTS or (source, reason) not in REASONS:
        raise ValueError(f"undefined A-ASSOCIATE-RJ {result}/{source}/{reason} (table 9-21)")
    return bytes((A_ASSOCIATE_RJ, 0, 0, 0, 0, 4, 0, result, source, reason))


def a_abort(source: int = ABORT_PROVIDER, reason: int = 0) -> bytes:
    """An A-ABORT PDU (reason is meaningful only when the provider aborts)."""
    if source not in (ABORT_USER, ABORT_PROVIDER) or reason not in ABORT_REASONS:
        raise ValueError(f"undefined A-ABORT source/reason {source}/{reason}")
    return bytes((A_ABORT, 0, 0, 0, 0, 4, 0, 0, source, reason if source else 0))


def describe_rj(result: int, source: int, reason: int) -> str:
    """The RJ as PS3.8 names it, e.g. "rejected-transient, service-provider (presentation),
    temporary-congestion" (for log lines and docs)."""
    return f"{RESULTS[result]}, {SOURCES[source]}, {REASONS[source, reason]}"
