"""Fuzz the MLLP frame and MSH readers the daemon runs on a refused HL7 sender's first bytes,
and the ACK built from what they accept.

mllp_frame answers None (incomplete), the message, or raises Hl7Error; parse_msh answers an Msh
or raises Hl7Error; ack() of an accepted header must itself parse back, and read_ack (what
`medtls probe` runs on a receiver's answer) must read it back too and answer an Ack or Hl7Error
on any input. Anything else is a crash;
so is a frame longer than the cap."""

import sys

import atheris

with atheris.instrument_imports():
    from medtls.core import hl7

CAP = 4096


def TestOneInput(data: bytes) -> None:
    try:
        msg = hl7.mllp_frame(data, CAP)
    except hl7.Hl7Error:
        msg = None
    if msg is not None and len(msg) >= CAP:
        raise AssertionError(f"frame of {len(msg)} bytes past the cap")
    try:
        got = hl7.read_ack(msg if msg is not None else data)
        if got.code not in hl7.ACK_ANSWERS or len(got.text) > hl7.MAX_ACK_TEXT:
            raise AssertionError(f"ACK read as {got!r}")
    except hl7.Hl7Error:
        pass
    try:
        msh = hl7.parse_msh(msg if msg is not None else data)
    except hl7.Hl7Error:
        return
    answer = hl7.ack(msh, "AE", "medtls: fuzz|^~\\&", "MEDTLS1", "20260101")
    back = hl7.parse_msh(answer)
    if back.control_id != "MEDTLS1" or back.version != msh.version:
        raise AssertionError(f"ACK does not parse back: {back!r}")
    if hl7.read_ack(answer).control_id != msh.control_id:
        raise AssertionError(f"MSA-2 of the ACK is not {msh.control_id!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
