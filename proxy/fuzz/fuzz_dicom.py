"""Fuzz the A-ASSOCIATE-RQ reader the daemon runs on a refused device's first bytes.

read_associate_rq(stream) answers None (incomplete), an AssociateRq or raises DicomError.
Anything else is a crash; so is a request larger than the stream or than MAX_ASSOCIATE_RQ."""

import sys

import atheris

with atheris.instrument_imports():
    from medtls.core import dicom


def TestOneInput(data: bytes) -> None:
    try:
        got = dicom.read_associate_rq(data)
    except dicom.DicomError:
        return
    if got is None:
        return
    if not got.size <= min(len(data), dicom.MAX_ASSOCIATE_RQ):
        raise AssertionError(f"request of {got.size} bytes from {len(data)}")
    if not (1 <= len(got.called_ae) <= 16 and 1 <= len(got.calling_ae) <= 16):
        raise AssertionError(f"AE titles {got.called_ae!r} {got.calling_ae!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
