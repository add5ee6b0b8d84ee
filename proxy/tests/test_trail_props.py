"""The names reader of a protocol route's first message (medtls.core.trail): hostile bytes never
raise and never put anything but bounded printable ASCII into the trail; real messages give
their AE titles and MSH fields; a prefix is incomplete, never wrong."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from medtls.core import hl7, trail
from test_protocol_props import AE, SEPS, build_msg, build_rq


def _bounded(names):
    assert names is None or all(
        len(v) <= trail.MAX_VALUE and all(" " <= ch <= "~" for ch in v) for v in names.values()
    )


@given(st.binary(max_size=600), st.sampled_from(["dicom", "hl7", "tcp"]))
def test_any_bytes_give_none_empty_or_bounded_names(data, protocol):
    _bounded(trail.first_names(protocol, data))


@given(AE, AE, st.data())
def test_rq_names_and_its_prefixes(called, calling, data):
    rq = build_rq(called, calling)
    assert trail.first_names("dicom", rq + b"\x04\x00") == {
        "calling_ae": calling.strip(" "), "called_ae": called.strip(" "),
    }  # fmt: skip
    cut = data.draw(st.integers(0, len(rq) - 1))
    assert trail.first_names("dicom", rq[:cut]) is None


@given(SEPS, st.lists(st.text(st.characters(), max_size=80), min_size=4, max_size=4))
def test_msh_names_are_cleaned(seps, fields):
    fs = seps[0]
    fields = [f.replace(fs, "").replace("\r", "").replace("\n", "") for f in fields]
    msg = build_msg(seps, fields, "C1")
    try:
        expected = hl7.parse_msh(msg)
    except (hl7.Hl7Error, UnicodeEncodeError):
        expected = None
    names = trail.first_names("hl7", hl7.frame(msg))
    _bounded(names)
    if expected is not None:
        assert names["hl7_from"] == trail.clean(
            f"{fields[0]}/{fields[1]}" if fields[1] else fields[0]
        )


def test_hl7_names_need_only_the_msh_segment():
    msg = b"MSH|^~\\&|RIS|RAD|PACS|HOSP|20260101||ORM^O01|C1|P|2.5.1\rPID|" + b"x" * 100000
    names = trail.first_names("hl7", b"\x0b" + msg)
    assert names == {"hl7_from": "RIS/RAD", "hl7_to": "PACS/HOSP", "hl7_type": "ORM^O01"}
    assert trail.first_names("hl7", b"\x0bMSH|^~\\&|RIS") is None
    assert trail.first_names("hl7", b"GET / HTTP/1.1\r\n") == {}
    assert trail.first_names("dicom", b"GET / HTTP/1.1\r\n") == {}


def test_clean_bounds_and_marks_the_cut():
    assert trail.clean("A\x00B\u00e9") == "A?B?"
    long = trail.clean("x" * 500)
    assert len(long) == trail.MAX_VALUE and long.endswith("~")
