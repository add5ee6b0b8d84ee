"""Reading certificates and CRLs with the `cryptography` of either Python the tools run under:
Debian's /usr/bin/python3 (python3-cryptography 38, the enroll process and `medtls check` on a
box) and the venv (a recent release). 38 has neither `load_pem_x509_certificates` nor the
timezone-aware `*_utc` attributes (42 and later), so PEM goes through core's reader and every
time through `utc`."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from medtls.core.certparse import pem_certificates


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in file order; ValueError when a block is not one."""
    return [x509.load_der_x509_certificate(der) for der in pem_certificates(data)]


def utc(obj, name: str) -> dt.datetime | None:
    """`obj.<name>` (e.g. `not_valid_after`, `next_update`) as an aware UTC datetime."""
    value = getattr(obj, f"{name}_utc", None)  # cryptography >= 42
    if value is None:
        value = getattr(obj, name)  # older: naive, in UTC
        if value is not None:
            value = value.replace(tzinfo=dt.UTC)
    return value
