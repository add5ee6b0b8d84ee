"""Property tests of the HL7 side of `medtls probe` (medtls.core.hl7): its test message is an
HL7 message python-hl7 and our own reader accept, and read_ack reads any receiver's ACK (ours,
python-hl7's) back and nothing but Hl7Error on any input."""

from __future__ import annotations

import contextlib

import hl7 as python_hl7
import pytest
from hypothesis import given
from hypothesis import strategies as st
from medtls.core import hl7

ID = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-."), min_size=1, max_size=20)
TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


@given(ID, st.sampled_from(["", "HIS", "RIS-1"]))
def test_probe_message_is_an_nmq_with_our_control_id(control_id, receiver):
    raw = hl7.probe_message(control_id, "20261205120000", receiver)
    msh = hl7.parse_msh(raw)
    assert (msh.message_type, msh.control_id, msh.version) == ("NMQ^N01^NMQ_N01", control_id, "2.5")
    assert msh.receiving_application == receiver
    parsed = python_hl7.parse(raw.decode())
    assert str(parsed.segment("MSH")[10]) == control_id


@given(ID, st.sampled_from(hl7.ACK_CODES), TEXT, ID)
def test_read_ack_reads_back_the_ack_a_receiver_builds(control_id, code, text, own_id):
    msh = hl7.parse_msh(hl7.probe_message(control_id, "20261205120000"))
    got = hl7.read_ack(hl7.ack(msh, code, text, own_id, "20261205120001"))
    assert (got.code, got.control_id) == (code, control_id)
    assert len(got.text) <= hl7.MAX_ACK_TEXT
    assert got.msh.receiving_application == hl7.PROBE_APPLICATION


def test_read_ack_reads_python_hl7s_ack():
    msg = python_hl7.parse(hl7.probe_message("PRB42", "20261205120000").decode())
    answer = str(msg.create_ack("AA")).encode()
    assert hl7.read_ack(answer).code == "AA"
    assert hl7.read_ack(answer).control_id == "PRB42"


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"MSH|^~\\&|A||B||1||ACK|1|P|2.5\r", "no MSA"),
        (b"MSH|^~\\&|A||B||1||ACK|1|P|2.5\rMSA|OK|1\r", "not one of"),
        (b"PID|1\r", "MSH"),
    ],
)
def test_what_is_not_an_ack_is_named(message, why):
    with pytest.raises(hl7.Hl7Error, match=why):
        hl7.read_ack(message)


@given(st.binary(max_size=2048))
def test_any_bytes_give_an_ack_or_hl7_error(data):
    with contextlib.suppress(hl7.Hl7Error):
        got = hl7.read_ack(data)
        assert got.code in hl7.ACK_ANSWERS
