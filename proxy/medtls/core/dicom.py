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


# --------------------------------------------------------------------------- the probe's side
# What `medtls probe` needs to be a DICOM association requester: build an A-ASSOCIATE-RQ for the
# Verification SOP class, a C-ECHO-RQ in a P-DATA-TF and an A-RELEASE-RQ; read the answer PDUs
# (A-ASSOCIATE-AC/RJ, P-DATA-TF, A-RELEASE-RP, A-ABORT) and the C-ECHO-RSP command. Every reader
# is bounded (MAX_RESPONSE_PDU) and strict: a malformed answer is a DicomError naming the fault.

A_ASSOCIATE_AC = 0x02
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
PDU_NAMES = {
    A_ASSOCIATE_RQ: "A-ASSOCIATE-RQ", A_ASSOCIATE_AC: "A-ASSOCIATE-AC",
    A_ASSOCIATE_RJ: "A-ASSOCIATE-RJ", P_DATA_TF: "P-DATA-TF", A_RELEASE_RQ: "A-RELEASE-RQ",
    A_RELEASE_RP: "A-RELEASE-RP", A_ABORT: "A-ABORT",
}  # fmt: skip
# An answer larger than this is not read: an AC is a few hundred bytes, and the P-DATA-TF we
# accept is bounded by the maximum length we propose (MAX_PDU_RECEIVE).
MAX_RESPONSE_PDU = 65536
MAX_PDU_RECEIVE = 16384

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # DICOM Application Context Name
VERIFICATION = "1.2.840.10008.1.1"  # Verification SOP Class (C-ECHO)
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
# The probe's implementation class UID: a UUID-derived UID (PS3.5 B.2) fixed for medtls.
IMPLEMENTATION_UID = "2.25.265151398305437812637049402163461829163"
IMPLEMENTATION_VERSION = "MEDTLS_PROBE"

ITEM_PRESENTATION_CONTEXT_AC = 0x21
SUB_ABSTRACT_SYNTAX = 0x30
SUB_TRANSFER_SYNTAX = 0x40
SUB_MAX_LENGTH = 0x51
SUB_IMPLEMENTATION_UID = 0x52
SUB_IMPLEMENTATION_VERSION = 0x55

# Presentation context results of an A-ASSOCIATE-AC (PS3.8 table 9-18).
CONTEXT_RESULTS = {
    0: "acceptance",
    1: "user-rejection",
    2: "no-reason (provider rejection)",
    3: "abstract-syntax-not-supported (provider rejection)",
    4: "transfer-syntaxes-not-supported (provider rejection)",
}

# DIMSE (PS3.7): command fields and the C-ECHO-RSP statuses.
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
NO_DATA_SET = 0x0101
MAX_COMMAND = 4096  # a C-ECHO-RSP is ~80 bytes; an error comment may add some
_UID = frozenset(b"0123456789.")


def _uid(raw: bytes, what: str) -> str:
    # A UID in an item is not padded, but some implementations add the PS3.5 NUL pad.
    text = raw[:-1] if raw.endswith(b"\x00") else raw
    if not text or len(text) > 64 or not set(text) <= _UID:
        raise DicomError(f"{what} {raw[:80]!r} is not a UID")
    return text.decode("ascii")


def _item(kind: int, value: bytes) -> bytes:
    return bytes((kind, 0)) + len(value).to_bytes(2, "big") + value


def _pdu(kind: int, body: bytes) -> bytes:
    return bytes((kind, 0)) + len(body).to_bytes(4, "big") + body


def _ae_field(title: str, which: str) -> bytes:
    if (
        not 1 <= len(title) <= 16
        or not title.strip(" ")
        or any(not 0x20 <= ord(c) <= 0x7E or c == "\\" for c in title)
    ):
        raise ValueError(f"{which} AE title {title!r}: 1-16 characters, no backslash or controls")
    return title.encode("ascii").ljust(16, b" ")


def associate_rq(
    calling_ae: str,
    called_ae: str,
    abstract_syntax: str = VERIFICATION,
    transfer_syntaxes: tuple[str, ...] = (IMPLICIT_VR_LE,),
    context_id: int = 1,
    max_pdu: int = MAX_PDU_RECEIVE,
) -> bytes:
    """An A-ASSOCIATE-RQ proposing one presentation context; ValueError for an AE title that
    is not one (1-16 characters of the default repertoire, no backslash)."""
    if not (1 <= context_id <= 255 and context_id % 2):
        raise ValueError(f"presentation context id {context_id} is not odd in 1..255")
    fixed = (
        (1).to_bytes(2, "big") + b"\x00\x00" + _ae_field(called_ae, "called")
        + _ae_field(calling_ae, "calling") + bytes(32)
    )  # fmt: skip
    syntaxes = _item(SUB_ABSTRACT_SYNTAX, abstract_syntax.encode("ascii"))
    syntaxes += b"".join(_item(SUB_TRANSFER_SYNTAX, ts.encode("ascii")) for ts in transfer_syntaxes)
    context = _item(ITEM_PRESENTATION_CONTEXT, bytes((context_id, 0, 0, 0)) + syntaxes)
    user = _item(SUB_MAX_LENGTH, max_pdu.to_bytes(4, "big"))
    user += _item(SUB_IMPLEMENTATION_UID, IMPLEMENTATION_UID.encode("ascii"))
    user += _item(SUB_IMPLEMENTATION_VERSION, IMPLEMENTATION_VERSION.encode("ascii"))
    items = _item(ITEM_APPLICATION_CONTEXT, APPLICATION_CONTEXT.encode("ascii"))
    items += context + _item(ITEM_USER_INFORMATION, user)
    return _pdu(A_ASSOCIATE_RQ, fixed + items)


def release_rq() -> bytes:
    return _pdu(A_RELEASE_RQ, bytes(4))


@dataclass(frozen=True, slots=True)
class Pdu:
    kind: int  # PDU type
    body: bytes  # after the 6-byte header
    size: int  # header included

    @property
    def name(self) -> str:
        return PDU_NAMES.get(self.kind, f"PDU type 0x{self.kind:02x}")


def read_pdu(data: bytes, limit: int = MAX_RESPONSE_PDU) -> Pdu | None:
    """The PDU `data` starts with, None while incomplete; DicomError for a type PS3.8 does not
    define or a PDU longer than `limit` bytes (nothing past the PDU is looked at)."""
    if not data:
        return None
    if data[0] not in PDU_NAMES:
        raise DicomError(f"PDU type 0x{data[0]:02x} is not a DICOM upper layer PDU")
    if len(data) < HEADER:
        return None
    size = HEADER + int.from_bytes(data[2:6], "big")
    if size > limit:
        raise DicomError(f"{PDU_NAMES[data[0]]} of {size} bytes (limit {limit})")
    if len(data) < size:
        return None
    return Pdu(data[0], bytes(data[HEADER:size]), size)


def _items(body: bytes, start: int, what: str):
    """(type, value) of each item of a PDU body from `start`; DicomError when one overruns."""
    pos = start
    while pos < len(body):
        if pos + 4 > len(body):
            raise DicomError(f"{what} ends inside an item header")
        kind, length = body[pos], int.from_bytes(body[pos + 2 : pos + 4], "big")
        end = pos + 4 + length
        if end > len(body):
            raise DicomError(f"{what} item 0x{kind:02x} runs past its end")
        yield kind, body[pos + 4 : end]
        pos = end


@dataclass(frozen=True, slots=True)
class AssociateAc:
    called_ae: str
    calling_ae: str
    contexts: tuple[tuple[int, int, str], ...]  # (context id, result, transfer syntax or "")
    max_pdu: int  # the acceptor's maximum PDU length (0: unlimited)
    implementation_uid: str

    def result_of(self, context_id: int) -> int | None:
        for cid, result, _ts in self.contexts:
            if cid == context_id:
                return result
        return None


def read_associate_ac(pdu: Pdu) -> AssociateAc:
    """The fields of an A-ASSOCIATE-AC the probe reports; DicomError for a malformed one."""
    body = pdu.body
    if pdu.kind != A_ASSOCIATE_AC:
        raise DicomError(f"{pdu.name} is not an A-ASSOCIATE-AC")
    if len(body) < RQ_FIXED:
        raise DicomError(f"A-ASSOCIATE-AC of {len(body)} bytes is shorter than its fixed fields")
    # The AE titles are echoes of ours and "shall not be tested" (PS3.8 9.3.3.2): kept as text.
    called = body[4:20].decode("ascii", "replace").strip(" \x00")
    calling = body[20:36].decode("ascii", "replace").strip(" \x00")
    contexts: list[tuple[int, int, str]] = []
    max_pdu, impl, seen_app = 0, "", False
    for kind, value in _items(body, RQ_FIXED, "A-ASSOCIATE-AC"):
        if kind == ITEM_APPLICATION_CONTEXT:
            seen_app = True
        elif kind == ITEM_PRESENTATION_CONTEXT_AC:
            if len(value) < 4:
                raise DicomError("A-ASSOCIATE-AC presentation context item too short")
            ts = ""
            for sub, sval in _items(value, 4, "presentation context"):
                if sub == SUB_TRANSFER_SYNTAX and sval:
                    ts = _uid(sval, "transfer syntax")
            if value[2] not in CONTEXT_RESULTS:
                raise DicomError(f"presentation context result {value[2]} is undefined")
            contexts.append((value[0], value[2], ts))
        elif kind == ITEM_USER_INFORMATION:
            for sub, sval in _items(value, 0, "user information"):
                if sub == SUB_MAX_LENGTH:
                    if len(sval) != 4:
                        raise DicomError("maximum length sub-item is not 4 bytes")
                    max_pdu = int.from_bytes(sval, "big")
                elif sub == SUB_IMPLEMENTATION_UID and sval:
                    impl = _uid(sval, "implementation class UID")
        else:
            raise DicomError(f"A-ASSOCIATE-AC has an item of type 0x{kind:02x}")
    if not seen_app:
        raise DicomError("A-ASSOCIATE-AC has no application context item")
    if not contexts:
        raise DicomError("A-ASSOCIATE-AC answers no presentation context")
    return AssociateAc(called, calling, tuple(contexts), max_pdu, impl)


def read_rj(pdu: Pdu) -> tuple[int, int, int]:
    """(result, source, reason) of an A-ASSOCIATE-RJ, as sent (describe_any names them)."""
    if pdu.kind != A_ASSOCIATE_RJ or len(pdu.body) != 4:
        raise DicomError(f"{pdu.name} of {len(pdu.body)} body bytes is not an A-ASSOCIATE-RJ")
    return pdu.body[1], pdu.body[2], pdu.body[3]


def read_abort(pdu: Pdu) -> tuple[int, int]:
    """(source, reason) of an A-ABORT."""
    if pdu.kind != A_ABORT or len(pdu.body) != 4:
        raise DicomError(f"{pdu.name} of {len(pdu.body)} body bytes is not an A-ABORT")
    return pdu.body[2], pdu.body[3]


def describe_any_rj(result: int, source: int, reason: int) -> str:
    """describe_rj for values a peer sent, which table 9-21 may not define."""
    return ", ".join((
        RESULTS.get(result, f"result {result}"),
        SOURCES.get(source, f"source {source}"),
        REASONS.get((source, reason), f"reason {reason}"),
    ))  # fmt: skip


def describe_abort(source: int, reason: int) -> str:
    who = {ABORT_USER: "service-user", ABORT_PROVIDER: "service-provider"}
    what = ABORT_REASONS.get(reason, f"reason {reason}") if source == ABORT_PROVIDER else ""
    return who.get(source, f"source {source}") + (f", {what}" if what else "")


@dataclass(frozen=True, slots=True)
class Pdv:
    context_id: int
    command: bool
    last: bool
    data: bytes


def p_data(context_id: int, data: bytes, command: bool, last: bool = True) -> bytes:
    """A P-DATA-TF carrying one PDV (the caller fragments to the peer's maximum length)."""
    header = bytes((context_id, (1 if command else 0) | (2 if last else 0)))
    pdv = (len(data) + 2).to_bytes(4, "big") + header + data
    return _pdu(P_DATA_TF, pdv)


def read_pdvs(pdu: Pdu) -> list[Pdv]:
    """The PDVs of a P-DATA-TF; DicomError when one overruns or is empty."""
    if pdu.kind != P_DATA_TF:
        raise DicomError(f"{pdu.name} is not a P-DATA-TF")
    body, pos, out = pdu.body, 0, []
    while pos < len(body):
        if pos + 6 > len(body):
            raise DicomError("P-DATA-TF ends inside a PDV header")
        length = int.from_bytes(body[pos : pos + 4], "big")
        if length < 2 or pos + 4 + length > len(body):
            raise DicomError(f"PDV length {length} does not fit the P-DATA-TF")
        ctl = body[pos + 5]
        out.append(
            Pdv(body[pos + 4], bool(ctl & 1), bool(ctl & 2), body[pos + 6 : pos + 4 + length])
        )
        pos += 4 + length
    if not out:
        raise DicomError("P-DATA-TF holds no PDV")
    return out


def _element(elem: int, value: bytes) -> bytes:
    return (
        (0).to_bytes(2, "little")
        + elem.to_bytes(2, "little")
        + len(value).to_bytes(4, "little")
        + value
    )


def c_echo_rq(message_id: int) -> bytes:
    """The C-ECHO-RQ command set, implicit VR little endian (PS3.7 9.3.5)."""
    uid = VERIFICATION.encode("ascii")
    uid += b"\x00" * (len(uid) % 2)  # UI values are padded to even length with NUL
    rest = (
        _element(0x0002, uid) + _element(0x0100, C_ECHO_RQ.to_bytes(2, "little"))
        + _element(0x0110, message_id.to_bytes(2, "little"))
        + _element(0x0800, NO_DATA_SET.to_bytes(2, "little"))
    )  # fmt: skip
    return _element(0x0000, len(rest).to_bytes(4, "little")) + rest


def read_command(data: bytes) -> dict[int, bytes]:
    """Group 0000 elements of a command set (implicit VR LE): element number -> value;
    DicomError for another group, an overrun, a repeated element or more than MAX_COMMAND."""
    if len(data) > MAX_COMMAND:
        raise DicomError(f"command set of {len(data)} bytes (limit {MAX_COMMAND})")
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise DicomError("command set ends inside an element header")
        group = int.from_bytes(data[pos : pos + 2], "little")
        elem = int.from_bytes(data[pos + 2 : pos + 4], "little")
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if group != 0:
            raise DicomError(f"command set holds element ({group:04x},{elem:04x})")
        if pos + 8 + length > len(data):
            raise DicomError(f"command element (0000,{elem:04x}) runs past the command set")
        if elem in out:
            raise DicomError(f"command element (0000,{elem:04x}) repeated")
        out[elem] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return out


def _us(cmd: dict[int, bytes], elem: int, what: str) -> int:
    value = cmd.get(elem)
    if value is None or len(value) != 2:
        raise DicomError(f"C-ECHO-RSP lacks a 2-byte {what} (0000,{elem:04x})")
    return int.from_bytes(value, "little")


def c_echo_status(command_set: bytes, message_id: int) -> int:
    """The status (0000,0900) of the C-ECHO-RSP answering `message_id`; DicomError when the
    command set is not that response."""
    cmd = read_command(command_set)
    field = _us(cmd, 0x0100, "command field")
    if field != C_ECHO_RSP:
        raise DicomError(f"command field 0x{field:04x} is not C-ECHO-RSP (0x8030)")
    answered = _us(cmd, 0x0120, "message id being responded to")
    if answered != message_id:
        raise DicomError(f"C-ECHO-RSP answers message {answered}, not {message_id}")
    return _us(cmd, 0x0900, "status")


def describe_status(status: int) -> str:
    """A DIMSE status as PS3.7 C names its classes."""
    if status == 0:
        return "Success"
    if status == 0x0122:
        return "Failure: SOP class not supported"
    if status == 0x0210:
        return "Failure: duplicate invocation"
    if status == 0x0211:
        return "Failure: unrecognized operation"
    if status == 0x0212:
        return "Failure: mistyped argument"
    if status & 0xF000 in (0xA000, 0xC000):
        return "Failure"
    if status & 0xF000 == 0xB000:
        return "Warning"
    return "Unknown status"
