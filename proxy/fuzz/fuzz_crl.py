"""Fuzz the CRL file reader (`crlparse.crl_blocks`, every trust.crl passes through it before
OpenSSL sees a byte) and the stdlib CRL reader behind status and metrics (`parse_crl`).

Promised: a list of CRL blocks or ValueError; an accepted file holds only exact X509 CRL BEGIN
lines (anything else could reach a trust store); its blocks re-encoded read back the same;
`parse_crl` gives facts or CertParseError.
"""

import base64
import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from medtls.core.certparse import CertParseError
    from medtls.core.crlparse import crl_blocks, parse_crl

BEGIN = b"-----BEGIN X509 CRL-----"


def TestOneInput(data: bytes) -> None:
    if data[:1] == b"\x30":  # a DER SEQUENCE: straight to the DER reader as well
        with contextlib.suppress(CertParseError):
            parse_crl(data)
    try:
        blocks = crl_blocks(data)
    except ValueError as e:
        if not str(e):
            raise AssertionError("a refusal must say why") from None
        return
    lines = [line.removesuffix(b"\r") for line in data.split(b"\n")]
    if any(line.startswith(b"-----BEGIN") and line != BEGIN for line in lines):
        raise AssertionError("accepted a file with a BEGIN line that is not an X509 CRL")
    if [b.number for b in blocks] != list(range(1, len(blocks) + 1)):
        raise AssertionError("blocks out of order")
    for block in blocks:
        if lines[block.line - 1] != BEGIN or not block.der:
            raise AssertionError(f"{block.where} does not point at a BEGIN line")
    again = b"".join(
        BEGIN + b"\n" + base64.encodebytes(b.der) + b"-----END X509 CRL-----\n" for b in blocks
    )
    if [b.der for b in crl_blocks(again)] != [b.der for b in blocks]:
        raise AssertionError("re-encoded blocks read back differently")
    for block in blocks:
        with contextlib.suppress(CertParseError):  # its documented refusal
            parse_crl(block.der)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
