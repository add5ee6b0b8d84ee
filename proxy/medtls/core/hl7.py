"""HL7 v2 over MLLP as far as a refusal needs it: find the first framed message, read its MSH
segment with the message's own separators, and build the ACK an HL7 receiver would answer.
Pure functions, no I/O.

MLLP (HL7 v2 Appendix C): <VT> message <FS><CR>, segments end with <CR>. The reader never looks
past the first frame and never at more than MAX_FRAME bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VT = 0x0B
FS = 0x1C
CR = 0x0D
# A refused sender's message is read to its end, so that closing does not reset the connection
# under our answer; a larger message (an ORU carrying a document) gets a plain close.
MAX_FRAME = 65536
MAX_MSH = 4096  # the MSH segment: a few hundred bytes in practice
MAX_CONTROL_ID = 199  # MSH-10 (ST, 199 since v2.7; 20 before)
ACK_CODES = ("AA", "AE", "AR")
_VERSION = re.compile(r"2\.[0-9]{1,2}(\.[0-9]{1,2})?")


class Hl7Error(ValueError):
    """The bytes are not an MLLP frame holding an HL7 v2 message (the message says why)."""


def mllp_frame(data: bytes, cap: int = MAX_FRAME) -> bytes | None:
    """The message of the MLLP frame `data` starts with (without its framing), None while the
    frame is incomplete; Hl7Error when `data` is not one or the frame exceeds `cap` bytes."""
    if not data:
        return None
    if data[0] != VT:
        raise Hl7Error(f"first byte 0x{data[0]:02x} is not the MLLP start block (0x0b)")
    end = data.find(FS, 1, cap)
    if end < 0:
        if len(data) >= cap:
            raise Hl7Error(f"no MLLP end block within {cap} bytes")
        return None
    if end + 1 >= len(data):
        return None
    if data[end + 1] != CR:
        raise Hl7Error("MLLP end block not followed by a carriage return")
    return data[1:end]


def frame(message: bytes) -> bytes:
    """`message` in MLLP framing."""
    return bytes((VT,)) + message + bytes((FS, CR))


@dataclass(frozen=True, slots=True)
class Msh:
    """The fields of a message header a refusal (and the trail) uses, as sent (still encoded
    with the message's own separators)."""

    field_sep: str  # MSH-1
    encoding: str  # MSH-2: component, repetition, escape, subcomponent (v2.7+: truncation)
    sending_application: str  # MSH-3
    sending_facility: str  # MSH-4
    receiving_application: str  # MSH-5
    receiving_facility: str  # MSH-6
    message_type: str  # MSH-9, e.g. ORM^O01^ORM_O01
    control_id: str  # MSH-10
    processing_id: str  # MSH-11
    version: str  # MSH-12, e.g. 2.5.1

    @property
    def component_sep(self) -> str:
        return self.encoding[0]

    @property
    def trigger(self) -> str:
        """MSH-9.2, the trigger event (A01, O01, ...); "" when absent."""
        parts = self.message_type.split(self.component_sep)
        return parts[1] if len(parts) > 1 else ""


def _separator_ok(ch: str) -> bool:
    return 0x21 <= ord(ch) <= 0x7E and not ch.isalnum()


def parse_msh(message: bytes) -> Msh:
    """The MSH segment that `message` starts with; Hl7Error naming the problem otherwise."""
    if not message.startswith(b"MSH"):
        raise Hl7Error("message does not start with an MSH segment")
    end = len(message)
    for stop in (CR, 0x0A):  # a segment ends with CR; some senders use LF
        i = message.find(stop, 0, MAX_MSH + 1)
        if 0 <= i < end:
            end = i
    if end > MAX_MSH:
        raise Hl7Error(f"MSH segment longer than {MAX_MSH} bytes")
    raw = message[:end]
    if any(b < 0x20 or b > 0x7E for b in raw):
        raise Hl7Error("MSH segment holds a control or non-ASCII byte")
    seg = raw.decode("ascii")
    if len(seg) < 5:
        raise Hl7Error("MSH segment too short")
    fs = seg[3]
    if not _separator_ok(fs):
        raise Hl7Error(f"MSH field separator {fs!r} is not a separator character")
    fields = seg.split(fs)  # fields[i] is MSH-(i+1): MSH-1 is the separator itself
    enc = fields[1]
    if not 4 <= len(enc) <= 5 or len(set(enc + fs)) != len(enc) + 1:
        raise Hl7Error(f"MSH-2 encoding characters {enc!r} are not 4-5 distinct separators")
    if not all(_separator_ok(c) for c in enc):
        raise Hl7Error(f"MSH-2 encoding characters {enc!r} are not separator characters")
    if len(fields) < 12:
        raise Hl7Error(f"MSH has {len(fields)} fields; MSH-12 (version) is required")
    control_id = fields[9]
    if not control_id:
        raise Hl7Error("MSH-10 (message control id) is empty")
    if len(control_id) > MAX_CONTROL_ID:
        raise Hl7Error(f"MSH-10 (message control id) longer than {MAX_CONTROL_ID} characters")
    if not fields[8]:
        raise Hl7Error("MSH-9 (message type) is empty")
    version = fields[11].split(enc[0])[0]
    if not _VERSION.fullmatch(version):
        raise Hl7Error(f"MSH-12 version {version!r} is not an HL7 v2 version")
    return Msh(
        field_sep=fs, encoding=enc, sending_application=fields[2], sending_facility=fields[3],
        receiving_application=fields[4], receiving_facility=fields[5], message_type=fields[8],
        control_id=control_id, processing_id=fields[10], version=version,
    )  # fmt: skip


def escape(text: str, msh: Msh) -> str:
    """`text` as an HL7 ST value with the message's own escape sequences (\\F\\, \\S\\ ...);
    characters outside printable ASCII become '?'."""
    fs, enc = msh.field_sep, msh.encoding
    comp, rep, esc, sub = enc[0], enc[1], enc[2], enc[3]
    codes = {fs: "F", comp: "S", rep: "R", esc: "E", sub: "T"}
    if len(enc) > 4:
        codes[enc[4]] = "P"  # the v2.7 truncation character
    out = []
    for ch in text:
        if ch in codes:
            out.append(f"{esc}{codes[ch]}{esc}")
        elif 0x20 <= ord(ch) <= 0x7E:
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


def ack(msh: Msh, code: str, text: str, control_id: str, timestamp: str) -> bytes:
    """The ACK an HL7 receiver sends for the message with header `msh` (unframed): sending and
    receiving swapped, MSH-9 ACK^<trigger>^ACK, our own `control_id` (MSH-10), the same
    processing id and version; MSA-1 `code`, MSA-2 the message's control id, MSA-3 `text`."""
    if code not in ACK_CODES:
        raise ValueError(f"ACK code {code!r} is not one of {', '.join(ACK_CODES)}")
    fs, comp = msh.field_sep, msh.component_sep
    header = [
        "MSH", msh.encoding, msh.receiving_application, msh.receiving_facility,
        msh.sending_application, msh.sending_facility, timestamp, "",
        comp.join(("ACK", msh.trigger, "ACK")) if msh.trigger else "ACK",
        escape(control_id, msh), msh.processing_id, msh.version,
    ]  # fmt: skip
    msa = ["MSA", code, msh.control_id, escape(text, msh)]
    # MSH-1 is the separator between "MSH" and MSH-2, so the join writes it once.
    return (fs.join(header) + "\r" + fs.join(msa) + "\r").encode("ascii")


# --------------------------------------------------------------------------- the probe's side
# `medtls probe --hl7-message` sends one harmless message and reads the receiver's ACK: an
# NMQ^N01 (network management query, HL7 v2.5 chapter 14) with nothing but its MSH, which
# asks for no clinical action; any MLLP receiver answers it with an ACK (AA, or AE/AR naming
# why it would not process it), which proves the application round trip through the tunnel.
PROBE_MESSAGE_TYPE = "NMQ^N01^NMQ_N01"
PROBE_APPLICATION = "MEDTLS-PROBE"
MAX_ACK_TEXT = 200


def probe_message(control_id: str, timestamp: str, receiving_application: str = "") -> bytes:
    """The probe's test message (unframed): MSH only, processing id P, version 2.5."""
    fields = [
        "MSH", "^~\\&", PROBE_APPLICATION, "", receiving_application, "", timestamp, "",
        PROBE_MESSAGE_TYPE, control_id, "P", "2.5",
    ]  # fmt: skip
    text = "|".join(fields)
    if any(not 0x20 <= ord(c) <= 0x7E for c in text) or text.count("|") != len(fields) - 1:
        raise ValueError("probe message fields must be printable ASCII without '|'")
    return (text + "\r").encode("ascii")


@dataclass(frozen=True, slots=True)
class Ack:
    code: str  # MSA-1: AA, AE, AR (or CA, CE, CR in enhanced mode)
    control_id: str  # MSA-2: the control id of the message it acknowledges
    text: str  # MSA-3 (text message), as sent, at most MAX_ACK_TEXT characters
    msh: Msh


ACK_ANSWERS = ("AA", "AE", "AR", "CA", "CE", "CR")


def read_ack(message: bytes) -> Ack:
    """The ACK in `message` (one unframed HL7 message): its MSH and its MSA segment;
    Hl7Error naming the fault otherwise. Bounded: only the first MAX_MSH bytes of each of the
    first 16 segments are looked at."""
    msh = parse_msh(message)
    fs = msh.field_sep
    segments = message.replace(b"\n", b"\r").split(b"\r", 16)[:16]
    for raw in segments[1:]:
        seg = raw[:MAX_MSH]
        if not seg.startswith(b"MSA" + fs.encode("ascii")):
            continue
        if any(b < 0x20 or b > 0x7E for b in seg):
            raise Hl7Error("MSA segment holds a control or non-ASCII byte")
        fields = seg.decode("ascii").split(fs)
        code = fields[1] if len(fields) > 1 else ""
        if code not in ACK_ANSWERS:
            raise Hl7Error(f"MSA-1 acknowledgment code {code[:20]!r} is not one of AA, AE, AR")
        control_id = fields[2] if len(fields) > 2 else ""
        text = fields[3][:MAX_ACK_TEXT] if len(fields) > 3 else ""
        return Ack(code, control_id, text, msh)
    raise Hl7Error("message has no MSA segment (not an acknowledgment)")
