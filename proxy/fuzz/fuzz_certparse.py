"""Fuzz the peer-identity reader: `parse_der` and `cert_identity` on any bytes.

Promise under test (medtls/certparse.py's strictness contract): the only exception is
CertParseError, and two readings of the same bytes agree.
"""

import sys

import atheris

with atheris.instrument_imports():
    from medtls.core.certparse import CertParseError, parse_der
    from medtls.core.policy import cert_identity


def TestOneInput(data: bytes) -> None:
    try:
        facts = parse_der(data)
    except CertParseError:
        facts = None
    try:
        ident = cert_identity(data)
    except CertParseError:
        ident = None
    if (facts is None) != (ident is None):
        raise AssertionError("parse_der and cert_identity disagree on the same bytes")
    if ident is not None:
        assert ident.subject == facts.subject and ident.ips == facts.ips
        assert len(ident.spki_sha256) == 64


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
