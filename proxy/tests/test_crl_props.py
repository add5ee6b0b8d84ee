"""Properties of the CRL file reader (`crlparse.crl_blocks`): whatever the bytes, a list of DER
blocks or a ValueError; generated CRL files come back block for block; a BEGIN line of anything
but an X509 CRL is always refused; and nothing it accepts gives OpenSSL's own PEM loader a
certificate (the trust anchor that the old reader let through)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ssl
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from medtls.core.certparse import CertParseError
from medtls.core.crlparse import crl_blocks, parse_crl

BEGIN, END = b"-----BEGIN X509 CRL-----", b"-----END X509 CRL-----"
KEY = ed25519.Ed25519PrivateKey.generate()  # deterministic signatures: stable sizes
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
FAST = settings(max_examples=1000, deadline=None)
SLOW = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read(data: bytes) -> list[bytes] | None:
    """The DER blocks, or None when refused; any other exception fails the property."""
    try:
        blocks = crl_blocks(data)
    except ValueError as e:
        assert str(e), "an error must say what is wrong"
        return None
    assert blocks, "an accepted file holds at least one CRL"
    return [b.der for b in blocks]


def _crl(cn: str, days: int, serials: list[int]) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .last_update(NOW)
        .next_update(NOW + dt.timedelta(days=days))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW).build()
        )
    return builder.sign(KEY, None)


crls = st.builds(
    _crl,
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=16),
    st.integers(1, 400),
    st.lists(st.integers(1, 2**159 - 1), max_size=5, unique=True),
)


@st.composite
def crl_files(draw) -> tuple[bytes, list[bytes]]:
    """A valid CRL file (PEM of 1-4 CRLs, LF or CRLF, blank lines between) and its DERs."""
    ders = [c.public_bytes(Encoding.DER) for c in draw(st.lists(crls, min_size=1, max_size=4))]
    width = draw(st.sampled_from([64, 76, 4, 1000]))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    lines: list[bytes] = []
    for der in ders:
        lines += [b""] * draw(st.integers(0, 2))
        b64 = base64.b64encode(der)
        lines += [BEGIN, *(b64[i : i + width] for i in range(0, len(b64), width)), END]
    return newline.join(lines) + draw(st.sampled_from([newline, b""])), ders


LABELS = st.one_of(
    st.sampled_from([b"CERTIFICATE", b"TRUSTED CERTIFICATE", b"X509 CERTIFICATE",
                     b"certificate", b"x509 crl", b"X509 CRL ", b"X509  CRL", b"PRIVATE KEY"]),
    st.binary(min_size=1, max_size=20).filter(lambda b: b"\n" not in b and b != b"X509 CRL"),
)  # fmt: skip

LINES = st.one_of(
    st.sampled_from([BEGIN, END, b"", b" ", b"-", b"=", b"AAAA", b"AA==", b"\r",
                     b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"]),
    st.binary(max_size=48).map(base64.b64encode),
    st.binary(max_size=16),
    LABELS.map(lambda label: b"-----BEGIN " + label + b"-----"),
)  # fmt: skip


@FAST
@given(st.binary(max_size=2000))
def test_any_bytes_give_der_blocks_or_a_value_error(data):
    _read(data)


@FAST
@given(st.lists(LINES, max_size=40), st.sampled_from([b"\n", b"\r\n"]))
def test_any_pem_like_lines_give_der_blocks_or_a_value_error(lines, newline):
    ders = _read(newline.join(lines))
    for der in ders or ():
        with contextlib.suppress(CertParseError):
            parse_crl(der)


@SLOW
@given(crl_files())
def test_generated_crl_files_come_back_block_for_block(file):
    data, ders = file
    assert _read(data) == ders
    begins = [n for n, line in enumerate(data.split(b"\n"), 1) if line.rstrip(b"\r") == BEGIN]
    assert [(b.number, b.line) for b in crl_blocks(data)] == list(enumerate(begins, 1))
    assert [parse_crl(der).this_update for der in ders] == [NOW] * len(ders)


@SLOW
@given(crl_files(), LABELS, st.data())
def test_a_begin_line_of_anything_but_an_x509_crl_is_refused(file, label, data):
    lines = file[0].split(b"\n")
    at = data.draw(st.integers(0, len(lines)))
    lines.insert(at, b"-----BEGIN " + label + b"-----")
    assert _read(b"\n".join(lines)) is None


@SLOW
@given(crl_files(), st.data())
def test_nothing_the_reader_accepts_gives_openssl_a_certificate(file, data):
    """A damaged CRL file (one byte replaced, inserted or deleted, or a certificate appended)
    is refused, or OpenSSL's lenient PEM loader finds no certificate in it either."""
    raw, _ = file
    cert = _certificate_pem()
    raw = data.draw(
        st.sampled_from([raw, raw + cert, raw + cert.replace(b"\n-----END", b"-\n-----END")])
    )
    at = data.draw(st.integers(0, len(raw)))
    byte = bytes([data.draw(st.integers(0, 255))])
    damage = data.draw(st.sampled_from(["replace", "insert", "delete", "none"]))
    damaged = {
        "replace": raw[:at] + byte + raw[at + 1 :],
        "insert": raw[:at] + byte + raw[at:],
        "delete": raw[:at] + raw[at + 1 :],
        "none": raw,
    }[damage]
    if _read(damaged) is None:
        return
    with tempfile.NamedTemporaryFile(suffix=".pem") as fh:
        Path(fh.name).write_bytes(damaged)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_verify_locations(cafile=fh.name)
        except ssl.SSLError:
            return
        assert ctx.cert_store_stats()["x509"] == 0


_CERT: list[bytes] = []


def _certificate_pem() -> bytes:
    if not _CERT:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Smuggled CA")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(KEY.public_key())
            .serial_number(1)
            .not_valid_before(NOW)
            .not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(KEY, None)
        )
        _CERT.append(cert.public_bytes(Encoding.PEM))
    return _CERT[0]


def test_large_inputs_are_read_in_bounded_time():
    """Upper bounds only: one pass over lines, no backtracking."""
    der = _crl("big", 1, list(range(1, 200))).public_bytes(Encoding.DER)
    body = base64.b64encode(der * 150)  # ~1 MB of base64 in one line, then in 64-column lines
    cases = [
        BEGIN + b"\n" + body + b"\n" + END + b"\n",
        BEGIN + b"\n" + b"\n".join(body[i : i + 64] for i in range(0, len(body), 64)) + b"\n",
        b"\n" * 1_000_000,
        b"-" * 1_000_000,
        BEGIN + b"\n" + b"A" * 1_000_000 + b"-\n",
        (b"-----BEGIN " + b"A" * 39 + b"\n") * 20_000,
    ]
    for data in cases:
        t0 = time.monotonic()
        _read(data)
        assert time.monotonic() - t0 < 10
