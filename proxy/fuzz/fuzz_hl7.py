"""Fuzz the MLLP frame and MSH readers the daemon runs on a refused HL7 sender's first bytes,
and the ACK built from what they accept.

mllp_frame answers None (incomplete), the message, or raises Hl7Error; parse_msh answers an Msh
or raises Hl7Error; ack() of an accepted header must itself parse back. Anything else is a crash;
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
        msh = hl7.parse_msh(msg if msg is not None else data)
    except hl7.Hl7Error:
        return
    back = hl7.parse_msh(hl7.ack(msh, "AE", "medtls: fuzz|^~\\&", "MEDTLS1", "20260101"))
    if back.control_id != "MEDTLS1" or back.version != msh.version:
        raise AssertionError(f"ACK does not parse back: {back!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
