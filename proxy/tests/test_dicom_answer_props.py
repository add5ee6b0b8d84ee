"""Property tests of the DICOM requester side `medtls probe` uses (medtls.core.dicom): the
A-ASSOCIATE-RQ it builds is what the daemon's own reader accepts, and the readers of a peer's
answers (AC, RJ, A-ABORT, P-DATA-TF, C-ECHO-RSP) round-trip, are bounded, and raise nothing
but DicomError on any input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from medtls.core import dicom

AE_CHARS = st.sampled_from([chr(c) for c in range(0x21, 0x7F) if c != 0x5C])
AE = st.text(AE_CHARS, min_size=1, max_size=16)
UID = st.from_regex(r"[12]\.[0-9]{1,10}(\.[0-9]{1,10}){0,4}", fullmatch=True)


def ac_pdu(called: str, calling: str, result: int = 0, ts: str = dicom.IMPLICIT_VR_LE,
           max_pdu: int = 16384, context_id: int = 1) -> bytes:  # fmt: skip
    fixed = (1).to_bytes(2, "big") + b"\0\0" + called.encode().ljust(16)
    fixed += calling.encode().ljust(16) + bytes(32)
    items = dicom._item(0x10, dicom.APPLICATION_CONTEXT.encode())
    items += dicom._item(0x21, bytes((context_id, 0, result, 0)) + dicom._item(0x40, ts.encode()))
    items += dicom._item(0x50, dicom._item(0x51, max_pdu.to_bytes(4, "big")))
    return dicom._pdu(dicom.A_ASSOCIATE_AC, fixed + items)


def echo_rsp(message_id: int, status: int) -> bytes:
    e = dicom._element
    rest = e(0x0002, b"1.2.840.10008.1.1\0") + e(0x0100, (0x8030).to_bytes(2, "little"))
    rest += e(0x0120, message_id.to_bytes(2, "little")) + e(0x0800, b"\x01\x01")
    rest += e(0x0900, status.to_bytes(2, "little"))
    return e(0x0000, len(rest).to_bytes(4, "little")) + rest


@given(AE, AE, st.binary(max_size=32))
def test_our_associate_rq_is_one_the_daemon_reads(calling, called, tail):
    pdu = dicom.associate_rq(calling, called)
    got = dicom.read_associate_rq(pdu + tail)
    assert got == dicom.AssociateRq(1, called.strip(), calling.strip(), len(pdu))
    assert dicom.read_pdu(pdu + tail).size == len(pdu)


@pytest.mark.parametrize("title", ["", "   ", "A" * 17, "BACK\\SLASH", "TAB\tX", "Ä"])
def test_an_ae_title_that_is_not_one_is_refused_by_the_builder(title):
    with pytest.raises(ValueError, match="AE title"):
        dicom.associate_rq(title, "ANY-SCP")


@given(AE, AE, st.sampled_from(sorted(dicom.CONTEXT_RESULTS)), UID, st.integers(0, 2**32 - 1))
def test_associate_ac_round_trip(called, calling, result, ts, max_pdu):
    ac = dicom.read_associate_ac(dicom.read_pdu(ac_pdu(called, calling, result, ts, max_pdu)))
    assert (ac.called_ae, ac.calling_ae) == (called.strip(), calling.strip())
    assert ac.contexts == ((1, result, ts),)
    assert ac.result_of(1) == result and ac.result_of(3) is None
    assert ac.max_pdu == max_pdu


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
def test_rj_and_abort_are_read_and_named_whatever_the_values(result, source, reason):
    rj = dicom.read_pdu(bytes((3, 0, 0, 0, 0, 4, 0, result, source, reason)))
    assert dicom.read_rj(rj) == (result, source, reason)
    assert dicom.describe_any_rj(result, source, reason)
    ab = dicom.read_pdu(bytes((7, 0, 0, 0, 0, 4, 0, 0, source, reason)))
    assert dicom.read_abort(ab) == (source, reason)
    assert dicom.describe_abort(source, reason)


def test_a_defined_rj_is_named_as_ps38_names_it():
    assert dicom.describe_any_rj(1, 1, 7) == dicom.describe_rj(1, 1, 7)
    assert dicom.describe_any_rj(1, 1, 7).endswith("called-AE-title-not-recognized")


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.booleans())
def test_c_echo_round_trip_through_p_data(message_id, status, last):
    pdu = dicom.read_pdu(dicom.p_data(1, echo_rsp(message_id, status), command=True, last=last))
    (pdv,) = dicom.read_pdvs(pdu)
    assert (pdv.context_id, pdv.command, pdv.last) == (1, True, last)
    assert dicom.c_echo_status(pdv.data, message_id) == status
    assert dicom.describe_status(status)


@given(st.integers(0, 0xFFFF))
def test_our_c_echo_rq_is_a_well_formed_command_set(message_id):
    cmd = dicom.read_command(dicom.c_echo_rq(message_id))
    assert int.from_bytes(cmd[0x0000], "little") == sum(8 + len(v) for k, v in cmd.items() if k)
    assert cmd[0x0002] == b"1.2.840.10008.1.1\0"
    assert int.from_bytes(cmd[0x0100], "little") == dicom.C_ECHO_RQ
    assert int.from_bytes(cmd[0x0110], "little") == message_id


def test_a_response_to_another_message_or_command_is_refused():
    with pytest.raises(dicom.DicomError, match="answers message 2"):
        dicom.c_echo_status(echo_rsp(2, 0), 1)
    with pytest.raises(dicom.DicomError, match="not C-ECHO-RSP"):
        dicom.c_echo_status(dicom.c_echo_rq(1), 1)


@given(st.binary(max_size=2048))
def test_any_bytes_give_a_pdu_none_or_dicom_error(data):
    try:
        pdu = dicom.read_pdu(data)
    except dicom.DicomError:
        return
    if pdu is None:
        return
    assert pdu.size <= len(data)
    for reader in (dicom.read_associate_ac, dicom.read_rj, dicom.read_abort, dicom.read_pdvs):
        with contextlib.suppress(dicom.DicomError):
            reader(pdu)


@given(st.binary(max_size=512), st.integers(0, 0xFFFF))
def test_any_command_bytes_give_a_status_or_dicom_error(data, message_id):
    with contextlib.suppress(dicom.DicomError):
        dicom.c_echo_status(data, message_id)


@given(st.integers(dicom.MAX_RESPONSE_PDU - dicom.HEADER + 1, 2**32 - 1))
def test_an_oversized_answer_is_refused_from_its_header(length):
    with pytest.raises(dicom.DicomError, match="limit"):
        dicom.read_pdu(bytes((2, 0)) + length.to_bytes(4, "big"))


@given(AE, AE, st.data())
def test_a_prefix_of_an_answer_is_incomplete_never_wrong(called, calling, data):
    pdu = ac_pdu(called, calling)
    cut = data.draw(st.integers(0, len(pdu) - 1))
    assert dicom.read_pdu(pdu[:cut]) is None
