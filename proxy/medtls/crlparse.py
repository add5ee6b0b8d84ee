"""Just enough DER to read what operations need from an X.509 CRL (issuer, this/next update),
with the stdlib only; OpenSSL itself checks signatures and revocations in every handshake."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass

from medtls.certparse import CertParseError, _name, _time, tbs_fields

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----([^-]*)-----END \1-----")
_TIMES = (0x17, 0x18)


@dataclass(frozen=True)
class CrlFacts:
    issuer: str
    this_update: dt.datetime
    next_update: dt.datetime | None


def pem_crls(data: bytes) -> list[bytes]:
    """DER of every CRL in a PEM file; ValueError if it holds anything else.

    A CRL file is loaded into the same OpenSSL store as the trusted CAs, so a certificate in it
    would silently become a trust anchor: only `X509 CRL` blocks are accepted.
    """
    out = []
    for m in _PEM_BLOCK.finditer(data):
        kind = m.group(1).decode()
        if kind != "X509 CRL":
            raise ValueError(f"holds a {kind} block; only X509 CRL blocks are allowed")
        try:
            out.append(base64.b64decode(m.group(2), validate=False))
        except binascii.Error:
            raise ValueError("a CRL block is not valid base64") from None
    if not out:
        raise ValueError("no PEM CRL (-----BEGIN X509 CRL-----) found")
    return out


def parse_crl(der: bytes) -> CrlFacts:
    """Issuer and update times of one DER CRL (raises CertParseError)."""
    try:
        fields = tbs_fields(der, "CRL", 0x02)  # INTEGER version
        if len(fields) < 3:
            raise CertParseError("truncated TBSCertList")
        issuer = _name(der, fields[1][1], fields[1][2])[0]
        this_update = _time(fields[2][0], der[fields[2][1] : fields[2][2]])
        nxt = fields[3] if len(fields) > 3 and fields[3][0] in _TIMES else None
        next_update = _time(nxt[0], der[nxt[1] : nxt[2]]) if nxt else None
    except CertParseError:
        raise
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise CertParseError(f"malformed CRL: {e}") from None
    return CrlFacts(issuer, this_update, next_update)
