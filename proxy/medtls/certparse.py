"""Just enough DER to read the identity facts of an X.509 certificate, with the stdlib only.

The serving process must not import `cryptography` (≈ 13 MiB RSS per process and ≈ 77 µs per
handshake): OpenSSL has already verified the chain, so all that is left is to read the subject,
the subjectAltName entries, the validity end and the SubjectPublicKeyInfo bytes. The subject is
rendered exactly like `cryptography`'s `Name.rfc4514_string()` (tested against it).
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import ipaddress
import re
import ssl
from dataclasses import dataclass

_SEQ, _SET, _OID, _OCTETS, _BOOL, _BITS = 0x30, 0x31, 0x06, 0x04, 0x01, 0x03

# cryptography's short names; every other attribute type is written as a dotted OID.
SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
_SAN = "2.5.29.17"
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x12: "ascii",  # NumericString
    0x1A: "ascii",  # VisibleString
    0x14: "latin-1",  # TeletexString
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}


class CertParseError(ValueError):
    """The bytes are not a certificate this module can read."""


@dataclass(frozen=True)
class CertFacts:
    subject: str  # RFC 4514, most significant RDN last (as cryptography renders it)
    subject_attrs: tuple[tuple[str, str | bytes], ...]  # (short name or dotted OID, value)
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    uris: tuple[str, ...]
    not_after: dt.datetime  # UTC
    spki: bytes  # DER SubjectPublicKeyInfo as it appears in the certificate

    @property
    def cns(self) -> tuple[str, ...]:
        return tuple(v for k, v in self.subject_attrs if k == "CN" and isinstance(v, str))

    @property
    def spki_sha256(self) -> str:
        return hashlib.sha256(self.spki).hexdigest()


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at `pos`."""
    if pos + 2 > end:
        raise CertParseError("truncated DER")
    tag = buf[pos]
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if not 0 < k <= 4 or pos + k > end:
            raise CertParseError("bad DER length")
        n = int.from_bytes(buf[pos : pos + k], "big")
        pos += k
    if pos + n > end:
        raise CertParseError("truncated DER")
    return tag, pos, pos + n


def _children(buf: bytes, start: int, end: int):
    pos = start
    while pos < end:
        tag, s, e = _tlv(buf, pos, end)
        yield tag, s, e, pos
        pos = e


def _oid(raw: bytes) -> str:
    if not raw:
        raise CertParseError("empty OID")
    arcs, value = [], 0
    for b in raw:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def _value(tag: int, raw: bytes) -> str | bytes:
    codec = _STRING_CODECS.get(tag)
    if codec is not None:
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            raise CertParseError("badly encoded name string") from None
    if tag == _BITS:
        return raw[1:]
    return raw


def _escape(value: str | bytes) -> str:
    # Same rules as cryptography's _escape_dn_value (RFC 4514 section 2.4).
    if not value:
        return ""
    if isinstance(value, bytes):
        return "#" + binascii.hexlify(value).decode("ascii")
    for ch, esc in (("\\", "\\\\"), ('"', '\\"'), ("+", "\\+"), (",", "\\,"), (";", "\\;"),
                    ("<", "\\<"), (">", "\\>"), ("\0", "\\00")):  # fmt: skip
        value = value.replace(ch, esc)
    if value[0] == "#" or (value[0] == " " and len(value) > 1):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


def _name(buf: bytes, start: int, end: int) -> tuple[str, tuple[tuple[str, str | bytes], ...]]:
    rdns, attrs = [], []
    for tag, s, e, _ in _children(buf, start, end):
        if tag != _SET:
            raise CertParseError("bad Name")
        parts = []
        for atag, a_s, a_e, _ in _children(buf, s, e):
            if atag != _SEQ:
                raise CertParseError("bad AttributeTypeAndValue")
            (otag, os_, oe, _), (vtag, vs, ve, _) = list(_children(buf, a_s, a_e))[:2]
            if otag != _OID:
                raise CertParseError("bad attribute type")
            oid = _oid(buf[os_:oe])
            key = SHORT_NAMES.get(oid, oid)
            value = _value(vtag, buf[vs:ve])
            attrs.append((key, value))
            parts.append(f"{key}={_escape(value)}")
        rdns.append("+".join(parts))
    return ",".join(reversed(rdns)), tuple(attrs)


def _time(tag: int, raw: bytes) -> dt.datetime:
    text = raw.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        year = int(text[:2])
        text = str(1900 + year if year >= 50 else 2000 + year) + text[2:]
    elif tag != 0x18:
        raise CertParseError("bad validity time")
    if len(text) != 15 or text[-1] != "Z":
        raise CertParseError("bad validity time")
    return dt.datetime(
        int(text[0:4]), int(text[4:6]), int(text[6:8]),
        int(text[8:10]), int(text[10:12]), int(text[12:14]), tzinfo=dt.UTC,
    )  # fmt: skip


def _san(buf: bytes, start: int, end: int):
    dns, ips, uris = [], [], []
    tag, s, e = _tlv(buf, start, end)
    if tag != _SEQ:
        raise CertParseError("bad subjectAltName")
    for gtag, gs, ge, _ in _children(buf, s, e):
        raw = buf[gs:ge]
        if gtag == 0x82:
            dns.append(raw.decode("ascii"))
        elif gtag == 0x87:
            ips.append(str(ipaddress.ip_address(raw)) if len(raw) in (4, 16) else raw.hex())
        elif gtag == 0x86:
            uris.append(raw.decode("ascii"))
    return dns, ips, uris


def parse_der(der: bytes) -> CertFacts:
    """Identity facts of one DER certificate (raises CertParseError)."""
    try:
        return _parse(bytes(der))
    except CertParseError:
        raise
    except (ValueError, IndexError) as e:
        raise CertParseError(f"malformed certificate: {e}") from None


def tbs_fields(der: bytes, what: str, version_tag: int) -> list[tuple[int, int, int, int]]:
    """(tag, start, end, header start) of each field of a signed structure's to-be-signed part
    (certificate or CRL), without its optional version field."""
    tag, s, e = _tlv(der, 0, len(der))
    if tag != _SEQ:
        raise CertParseError(f"not a {what}")
    tag, ts, te = _tlv(der, s, e)
    if tag != _SEQ:
        raise CertParseError(f"not a {what}")
    fields = list(_children(der, ts, te))
    if fields and fields[0][0] == version_tag:
        fields = fields[1:]
    return fields


def _parse(der: bytes) -> CertFacts:
    fields = tbs_fields(der, "certificate", 0xA0)  # explicit [0] version
    if len(fields) < 6:
        raise CertParseError("truncated TBSCertificate")
    validity, subject, spki = fields[3], fields[4], fields[5]
    times = list(_children(der, validity[1], validity[2]))
    not_after = _time(times[1][0], der[times[1][1] : times[1][2]])
    subject_text, attrs = _name(der, subject[1], subject[2])
    spki_der = der[spki[3] : spki[2]]
    dns: list[str] = []
    ips: list[str] = []
    uris: list[str] = []
    for f in fields[6:]:
        if f[0] != 0xA3:
            continue
        _, xs, xe = _tlv(der, f[1], f[2])
        for _, es, ee, _ in _children(der, xs, xe):
            parts = list(_children(der, es, ee))
            if parts[0][0] == _OID and _oid(der[parts[0][1] : parts[0][2]]) == _SAN:
                octets = parts[-1]
                dns, ips, uris = _san(der, octets[1], octets[2])
    return CertFacts(subject_text, attrs, tuple(dns), tuple(ips), tuple(uris), not_after, spki_der)


_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")


def pem_certificates(data: bytes) -> list[bytes]:
    """DER of every certificate in a PEM file (a bundle yields several, in file order)."""
    return [ssl.PEM_cert_to_DER_cert(m.group().decode("ascii")) for m in _PEM.finditer(data)]


def sha256_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def spki_of(der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a certificate (what `spki_sha256` pins hash)."""
    return parse_der(der).spki
