"""A CRL file, block by block, and just enough DER to read what operations need from an X.509
CRL (issuer, this/next update), with the stdlib only; OpenSSL itself checks signatures and
revocations in every handshake."""

from __future__ import annotations

import binascii
import datetime as dt
import re
from dataclasses import dataclass

from medtls.core.certparse import CertParseError, _name, _time, tbs_fields

_BEGIN = b"-----BEGIN X509 CRL-----"
_END = b"-----END X509 CRL-----"
_BASE64_LINE = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
# Shown in an error only when it looks like a PEM label: never echo other file content.
_LABEL = re.compile(rb"-----(BEGIN|END) ([A-Za-z0-9 ]{1,40})-----")
_BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_TIMES = (0x17, 0x18)


@dataclass(frozen=True)
class CrlBlock:
    number: int  # 1-based, in file order
    line: int  # of its BEGIN line
    der: bytes

    @property
    def where(self) -> str:
        return f"block {self.number}, line {self.line}"


@dataclass(frozen=True)
class CrlFacts:
    issuer: str
    this_update: dt.datetime
    next_update: dt.datetime | None


def crl_blocks(data: bytes) -> list[CrlBlock]:
    """Every `X509 CRL` block of a PEM CRL file as DER; ValueError naming the block and the line
    at the first thing that is not exactly that.

    The file is read line by line and nothing in it is skipped: only blank lines may stand
    between blocks, every block is `-----BEGIN X509 CRL-----`, lines of strict base64,
    `-----END X509 CRL-----`. OpenSSL's own PEM reader is far more lenient (other labels, a '-'
    that ends the base64 early, text around blocks); a pattern that skipped what it did not
    understand let a certificate through to the trust store, where it became a trust anchor.
    """
    blocks: list[CrlBlock] = []
    begin = 0  # line of the open block's BEGIN; 0: between blocks
    body: list[bytes] = []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    for number, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        problem = None
        if not begin:
            if line.strip(b" \t") == b"":
                continue
            if line == _BEGIN:
                begin, body = number, []
            else:
                problem = _outside_problem(line)
        elif line == _END:
            where = f"block {len(blocks) + 1}, line {begin}"
            blocks.append(CrlBlock(len(blocks) + 1, begin, _decode(body, where)))
            begin = 0
        elif line.startswith(b"-----"):
            problem = _inside_problem(line, begin)
        elif not _BASE64_LINE.fullmatch(line):
            problem = _not_base64(line)
        else:
            body.append(line)
        if problem:
            raise ValueError(f"block {len(blocks) + 1}, line {number}: {problem}")
    if begin:
        raise ValueError(f"block {len(blocks) + 1}, line {begin}: no {_END.decode()} line")
    if not blocks:
        raise ValueError(f"no PEM CRL ({_BEGIN.decode()}) found")
    return blocks


def pem_crls(data: bytes) -> list[bytes]:
    """DER of every CRL in a PEM CRL file (see `crl_blocks`); ValueError otherwise."""
    return [block.der for block in crl_blocks(data)]


def _outside_problem(line: bytes) -> str:
    m = _LABEL.fullmatch(line)
    if m and m.group(1) == b"BEGIN":
        return f"a {m.group(2).decode()} block; only X509 CRL blocks are allowed"
    return f"text outside a block; only {_BEGIN.decode()} blocks and blank lines are allowed"


def _inside_problem(line: bytes, begin: int) -> str:
    m = _LABEL.fullmatch(line)
    if m and m.group(1) == b"BEGIN":
        return f"a BEGIN line inside the block opened at line {begin} (no {_END.decode()})"
    shown = f"'{line.decode()}'" if m else "a malformed PEM line"
    return f"{shown} where {_END.decode()} belongs"


def _not_base64(line: bytes) -> str:
    bad = next((i for i, c in enumerate(line) if c not in _BASE64_ALPHABET), None)
    if bad is None:
        return "'=' padding before the end of the line"
    char = f"'{chr(line[bad])}'" if 0x21 <= line[bad] < 0x7F else f"byte 0x{line[bad]:02x}"
    return f"{char} at column {bad + 1} is not base64"


def _decode(body: list[bytes], where: str) -> bytes:
    if not body:
        raise ValueError(f"{where}: empty block")
    try:
        der = binascii.a2b_base64(b"".join(body), strict_mode=True)
    except binascii.Error as e:
        raise ValueError(f"{where}: its base64 does not decode ({e})") from None
    if not der:
        raise ValueError(f"{where}: empty block")
    return der


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
