"""Fuzz the readers `medtls probe` runs on a DICOM peer's answers: read_pdu, then by type
read_associate_ac / read_rj / read_abort / read_pdvs and c_echo_status on a command PDV.

Each answers a value or raises DicomError; anything else is a crash, and so is a PDU larger
than the input or than MAX_RESPONSE_PDU."""

import sys

import atheris

with atheris.instrument_imports():
    from medtls.core import dicom


def TestOneInput(data: bytes) -> None:
    try:
        pdu = dicom.read_pdu(data)
        if pdu is None:
            return
        if not pdu.size <= min(len(data), dicom.MAX_RESPONSE_PDU):
            raise AssertionError(f"PDU of {pdu.size} bytes from {len(data)}")
        if pdu.kind == dicom.A_ASSOCIATE_AC:
            ac = dicom.read_associate_ac(pdu)
            if not ac.contexts:
                raise AssertionError("an AC without a presentation context")
        elif pdu.kind == dicom.A_ASSOCIATE_RJ:
            dicom.describe_any_rj(*dicom.read_rj(pdu))
        elif pdu.kind == dicom.A_ABORT:
            dicom.describe_abort(*dicom.read_abort(pdu))
        elif pdu.kind == dicom.P_DATA_TF:
            for pdv in dicom.read_pdvs(pdu):
                if pdv.command:
                    dicom.describe_status(dicom.c_echo_status(pdv.data, 1))
    except dicom.DicomError:
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
