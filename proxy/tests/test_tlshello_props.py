"""The ClientHello reader on hostile input (issue 16, defect 9): any bytes give None, a hello's
extension set or NotTls (offers_psk: a bool), and its work is bounded whatever the length:
a hello split into 1-byte handshake records cost ~24 ms of event-loop time (quadratic `+=`).
Work is measured by counting the Python lines the reader executes, not by timing it."""

from __future__ import annotations

import contextlib
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from medtls.core import tlshello

HELLO_FILE = tlshello.__file__


def lines_executed(fn, *args) -> int:
    """Line events inside medtls/tlshello.py while fn(*args) runs."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == HELLO_FILE else None

    sys.settrace(tracer)
    try:
        fn(*args)
    except tlshello.NotTls:
        pass
    finally:
        sys.settrace(None)
    return count


def client_hello(extensions: list[int], pad: int = 0) -> bytes:
    """A ClientHello handshake message (no record layer) with these extension types."""
    ext = b"".join(t.to_bytes(2, "big") + b"\0\0" for t in extensions)
    ext += (21).to_bytes(2, "big") + pad.to_bytes(2, "big") + bytes(pad)  # padding extension
    body = b"\3\3" + bytes(32) + b"\0" + b"\0\2\x13\1" + b"\1\0"
    body += len(ext).to_bytes(2, "big") + ext
    return b"\1" + len(body).to_bytes(3, "big") + body


def in_records(message: bytes, size: int) -> bytes:
    out = []
    for i in range(0, len(message), size):
        part = message[i : i + size]
        out.append(b"\x16\3\1" + len(part).to_bytes(2, "big") + part)
    return b"".join(out)


def test_a_hello_in_one_byte_records_costs_no_more_than_a_short_one():
    """The same ClientHello padded to 1 KiB and to 40 KiB, each in 1-byte records: the reader
    looks at the same bounded number of records (it used to walk and copy all 40,000)."""
    short = in_records(client_hello([41], pad=1000), 1)
    long = in_records(client_hello([41], pad=40000), 1)
    assert len(long) > 200_000
    n_short = lines_executed(tlshello.offers_psk, short)
    n_long = lines_executed(tlshello.offers_psk, long)
    assert n_long <= n_short
    assert n_long < 20 * tlshello.MAX_HELLO_RECORDS
    assert len(tlshello.handshake_records(long)) <= tlshello.MAX_HELLO_RECORDS
    assert not tlshello.offers_psk(long)  # not read to its end: treated as offering no ticket


def test_a_hello_in_a_few_records_is_still_read():
    hello = client_hello([43, 41], pad=3000)
    for size in (16384, 1000, 100):
        assert tlshello.offers_psk(in_records(hello, size)), size
    assert tlshello.hello_extensions(in_records(hello, 100))[1] >= {41, 43, 21}


stream_of_records = st.lists(
    st.tuples(st.sampled_from([22, 22, 22, 23, 21]), st.binary(max_size=40)), max_size=80
).map(lambda rs: b"".join(bytes([t, 3, 3]) + len(p).to_bytes(2, "big") + p for t, p in rs))
hello_like = st.builds(
    lambda exts, pad, size, cut: in_records(client_hello(exts, pad), size)[:cut],
    st.lists(st.integers(0, 65535), max_size=8),
    st.integers(0, 300),
    st.integers(1, 400),
    st.integers(0, 2000),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=600), stream_of_records, hello_like))
def test_any_bytes_answer_none_a_hello_or_not_tls_with_bounded_work(data):
    try:
        got = tlshello.hello_extensions(data)
    except tlshello.NotTls:
        got = None
    if got is not None:
        kind, exts = got
        assert kind in (tlshello.CLIENT_HELLO, tlshello.SERVER_HELLO)
        assert all(isinstance(t, int) and 0 <= t <= 65535 for t in exts)
    assert tlshello.offers_psk(data) in (True, False)
    with contextlib.suppress(tlshello.NotTls):
        assert len(tlshello.handshake_records(data)) <= tlshello.MAX_HELLO_RECORDS
    # at most a bounded amount per record looked at plus the extension list's entries
    work = lines_executed(tlshello.offers_psk, data)
    assert work <= 40 + 12 * tlshello.MAX_HELLO_RECORDS + 4 * (len(data) // 4), work
