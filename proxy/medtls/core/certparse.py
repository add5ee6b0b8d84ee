"""A strict DER reader for the identity facts of an X.509 certificate, with the stdlib only.

The serving process must not import `cryptography` (≈ 13 MiB RSS per process and ≈ 77 µs per
handshake): OpenSSL has already verified the chain, so all that is left is to read the subject,
the subjectAltName entries, basicConstraints, the validity end and the SubjectPublicKeyInfo
bytes. The subject is rendered exactly like `cryptography`'s `Name.rfc4514_string()` (tested
against it).

Strictness contract. This is the only parser of a peer's identity, and it reads the very bytes
OpenSSL verified (`getpeercert(binary_form=True)`). It reads those bytes as DER or not at all:
`parse_der` returns `CertFacts`, or raises `CertParseError` (never anything else), for any of
- BER forms: indefinite lengths, non-minimal lengths, constructed strings, high tag numbers;
- trailing bytes after the certificate or inside any element we read;
- a TBSCertificate whose fields are missing, out of order or of the wrong type;
- malformed BOOLEAN / INTEGER / BIT STRING / NULL / OBJECT IDENTIFIER encodings anywhere in
  the TBSCertificate, the signature algorithm or the signature;
- a string not valid in its declared type anywhere in a Name or a GeneralName (IA5String and
  the IA5 GeneralNames must be ASCII, PrintableString its X.680 alphabet, UTF8String valid
  UTF-8, BMPString/UniversalString valid UCS-2/UCS-4; TeletexString is read as UTF-8, as
  `cryptography` does), and attribute values of any other ASN.1 type but BIT STRING;
- an iPAddress GeneralName that is not 4 or 16 bytes (an address plus a mask is not an
  identity);
- duplicate extensions, and malformed subjectAltName, issuerAltName, basicConstraints, CRL
  distribution points, freshest CRL, authority and subject information access extensions (the
  extensions that carry GeneralNames: what OpenSSL's own dict view fails on).
Where the result is returned, subject, DNS/IP/URI SANs and SPKI equal `cryptography`'s reading
of the same bytes (tests/test_identity_props.py); other extensions are not interpreted.
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
_INT, _NULL = 0x02, 0x05

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
_IAN = "2.5.29.18"
_BASIC_CONSTRAINTS = "2.5.29.19"
_CRL_DP = "2.5.29.31"
_FRESHEST_CRL = "2.5.29.46"
_AIA = "1.3.6.1.5.5.7.1.1"
_SIA = "1.3.6.1.5.5.7.1.11"
_PRINTABLE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?"
)
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString (alphabet checked below)
    0x16: "ascii",  # IA5String
    0x12: "ascii",  # NumericString
    0x1A: "ascii",  # VisibleString
    0x14: "utf-8",  # TeletexString: in practice UTF-8 or ASCII; cryptography reads it so
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}
_MAX_DEPTH = 24  # nesting deeper than any certificate needs is refused, not recursed into


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
    ca: bool = False  # basicConstraints cA=TRUE
    not_before: dt.datetime | None = None  # UTC
    serial: str = ""  # lower-case hex, as cryptography's serial_number
    issuer: str = ""  # RFC 4514, as `subject`

    @property
    def cns(self) -> tuple[str, ...]:
        return tuple(v for k, v in self.subject_attrs if k == "CN" and isinstance(v, str))

    @property
    def spki_sha256(self) -> str:
        return hashlib.sha256(self.spki).hexdigest()


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at `pos`."""
    if pos + 2 > end:
        raise CertParseError("truncated DER")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise CertParseError("high tag number (not used in certificates)")
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0:
            raise CertParseError("BER indefinite length (not DER)")
        if k > 4 or pos + k > end:
            raise CertParseError("bad DER length")
        if buf[pos] == 0:
            raise CertParseError("non-minimal DER length")
        n = int.from_bytes(buf[pos : pos + k], "big")
        if n < 0x80:
            raise CertParseError("non-minimal DER length")
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


def _only(buf: bytes, start: int, end: int, tag: int, what: str) -> tuple[int, int]:
    """Content bounds of the single element of type `tag` that fills [start, end) exactly."""
    t, s, e = _tlv(buf, start, end)
    if t != tag or e != end:
        raise CertParseError(f"bad {what}")
    return s, e


def _oid(raw: bytes) -> str:
    if not raw or raw[-1] & 0x80:
        raise CertParseError("malformed OID")
    arcs, value, fresh = [], 0, True
    for b in raw:
        if fresh and b == 0x80:
            raise CertParseError("malformed OID (non-minimal arc)")
        value = (value << 7) | (b & 0x7F)
        fresh = not b & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def _check_primitive(tag: int, raw: bytes) -> None:
    """DER rules of the universal primitive types that appear in a certificate."""
    if tag == _BOOL:
        if len(raw) != 1 or raw[0] not in (0, 0xFF):
            raise CertParseError("malformed BOOLEAN")
    elif tag == _INT:
        if not raw or (len(raw) > 1 and (raw[0], raw[1] & 0x80) in ((0, 0), (0xFF, 0x80))):
            raise CertParseError("malformed INTEGER")
    elif tag == _BITS:
        if not raw or raw[0] > 7 or (len(raw) == 1 and raw[0]):
            raise CertParseError("malformed BIT STRING")
    elif tag == _NULL:
        if raw:
            raise CertParseError("malformed NULL")
    elif tag == _OID:
        _oid(raw)
    elif tag in _STRING_CODECS:
        _string(tag, raw)


def _check_der(buf: bytes, start: int, end: int, depth: int = 0) -> None:
    """Every element in [start, end) is well-formed DER, recursively (not into OCTET STRINGs)."""
    if depth > _MAX_DEPTH:
        raise CertParseError("DER nested too deeply")
    for tag, s, e, _ in _children(buf, start, end):
        if tag & 0x20:
            if tag & 0xC0 == 0 and tag not in (_SEQ, _SET):
                raise CertParseError("constructed string (BER, not DER)")
            _check_der(buf, s, e, depth + 1)
        elif tag == 0:
            raise CertParseError("end-of-contents octets (BER, not DER)")
        elif tag & 0xC0 == 0:
            _check_primitive(tag, buf[s:e])


def _string(tag: int, raw: bytes) -> str:
    try:
        text = raw.decode(_STRING_CODECS[tag])
    except UnicodeDecodeError:
        raise CertParseError("string not valid in its declared type") from None
    if tag == 0x13 and not _PRINTABLE.issuperset(raw):
        raise CertParseError("PrintableString with characters outside its alphabet")
    return text


def _value(tag: int, raw: bytes) -> str | bytes:
    if tag in _STRING_CODECS:
        return _string(tag, raw)
    if tag == _BITS:
        _check_primitive(tag, raw)
        return raw[1:]
    raise CertParseError("attribute value of an unsupported type")


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
    """RFC 4514 text and attributes of the RDNSequence in [start, end) (the Name's content)."""
    rdns, attrs = [], []
    for tag, s, e, _ in _children(buf, start, end):
        if tag != _SET:
            raise CertParseError("bad Name")
        parts = _rdn(buf, s, e)
        attrs += parts
        rdns.append("+".join(f"{key}={_escape(value)}" for key, value in parts))
    return ",".join(reversed(rdns)), tuple(attrs)


def _rdn(buf: bytes, start: int, end: int) -> list[tuple[str, str | bytes]]:
    """(type, value) of each AttributeTypeAndValue in one RDN's content (at least one)."""
    if start == end:
        raise CertParseError("empty RDN")
    parts, last = [], b""
    for atag, a_s, a_e, head in _children(buf, start, end):
        if buf[head:a_e] < last:
            raise CertParseError("RDN attributes not in DER SET OF order")
        last = buf[head:a_e]
        kids = list(_children(buf, a_s, a_e)) if atag == _SEQ else []
        if len(kids) != 2 or kids[0][0] != _OID:
            raise CertParseError("bad AttributeTypeAndValue")
        (_, os_, oe, _), (vtag, vs, ve, _) = kids
        oid = _oid(buf[os_:oe])
        parts.append((SHORT_NAMES.get(oid, oid), _value(vtag, buf[vs:ve])))
    return parts


def _time(tag: int, raw: bytes) -> dt.datetime:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise CertParseError("bad validity time") from None
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        if len(text) != 13 or not text[:2].isdigit():
            raise CertParseError("bad validity time")
        year = int(text[:2])
        text = str(1900 + year if year >= 50 else 2000 + year) + text[2:]
    elif tag != 0x18:
        raise CertParseError("bad validity time")
    if len(text) != 15 or text[-1] != "Z" or not (text[:14].isascii() and text[:14].isdigit()):
        raise CertParseError("bad validity time")
    try:
        return dt.datetime(
            int(text[0:4]), int(text[4:6]), int(text[6:8]),
            int(text[8:10]), int(text[10:12]), int(text[12:14]), tzinfo=dt.UTC,
        )  # fmt: skip
    except ValueError:
        raise CertParseError("bad validity time") from None


def _general_name(buf: bytes, tag: int, s: int, e: int, out: dict[int, list[str]]) -> None:
    """Check one GeneralName; collect dNSName (0x82), URI (0x86) and iPAddress (0x87)."""
    raw = buf[s:e]
    if tag in (0x81, 0x82, 0x86):  # rfc822Name, dNSName, URI: IA5String
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise CertParseError("non-ASCII byte in an IA5String GeneralName") from None
        out[tag].append(text)
    elif tag == 0x87:
        if len(raw) not in (4, 16):
            raise CertParseError(f"iPAddress GeneralName of {len(raw)} bytes (want 4 or 16)")
        out[tag].append(str(ipaddress.ip_address(raw)))
    elif tag == 0x88:
        _oid(raw)
    elif tag == 0xA4:  # directoryName: [4] EXPLICIT Name
        ns, ne = _only(buf, s, e, _SEQ, "directoryName")
        _name(buf, ns, ne)
    elif tag in (0xA0, 0xA3, 0xA5):  # otherName, x400Address, ediPartyName
        _check_der(buf, s, e)
    else:
        raise CertParseError(f"unknown GeneralName tag 0x{tag:02x}")


def _general_names(buf: bytes, s: int, e: int, out: dict[int, list[str]]) -> None:
    """The content of a GeneralNames SEQUENCE (at least one GeneralName)."""
    if s == e:
        raise CertParseError("empty GeneralNames")
    for tag, gs, ge, _ in _children(buf, s, e):
        _general_name(buf, tag, gs, ge, out)


def _extension(buf: bytes, oid: str, s: int, e: int, facts: dict) -> None:
    """Read (SAN, basicConstraints) or check (other GeneralName carriers) one extnValue."""
    if oid in (_SAN, _IAN):
        gs, ge = _only(buf, s, e, _SEQ, "GeneralNames")
        _general_names(buf, gs, ge, facts["san"] if oid == _SAN else _scratch())
    elif oid == _BASIC_CONSTRAINTS:
        bs, be = _only(buf, s, e, _SEQ, "basicConstraints")
        _check_der(buf, bs, be)
        kids = list(_children(buf, bs, be))
        if [k[0] for k in kids] not in ([], [_BOOL], [_INT], [_BOOL, _INT]):
            raise CertParseError("bad basicConstraints")
        if kids and kids[0][0] == _BOOL and buf[kids[0][1]] == 0:
            raise CertParseError("basicConstraints cA FALSE encoded (DER omits the default)")
        facts["ca"] = bool(kids and kids[0][0] == _BOOL and buf[kids[0][1]] == 0xFF)
    elif oid in (_CRL_DP, _FRESHEST_CRL):
        ls, le = _only(buf, s, e, _SEQ, "CRL distribution points")
        for tag, ds, de, _ in _children(buf, ls, le):
            if tag != _SEQ:
                raise CertParseError("bad DistributionPoint")
            _distribution_point(buf, ds, de)
    elif oid in (_AIA, _SIA):
        ls, le = _only(buf, s, e, _SEQ, "information access")
        for tag, ds, de, _ in _children(buf, ls, le):
            kids = list(_children(buf, ds, de))
            if tag != _SEQ or len(kids) != 2 or kids[0][0] != _OID:
                raise CertParseError("bad AccessDescription")
            _oid(buf[kids[0][1] : kids[0][2]])
            _general_name(buf, kids[1][0], kids[1][1], kids[1][2], _scratch())


def _distribution_point(buf: bytes, s: int, e: int) -> None:
    last = -1
    for tag, fs, fe, _ in _children(buf, s, e):
        order = {0xA0: 0, 0x81: 1, 0xA2: 2}.get(tag)
        if order is None or order <= last:
            raise CertParseError("bad DistributionPoint")
        last = order
        if tag == 0xA0:  # distributionPoint: fullName [0] GeneralNames | [1] RDN
            ntag, ns, ne = _tlv(buf, fs, fe)
            if ne != fe or ntag not in (0xA0, 0xA1):
                raise CertParseError("bad DistributionPointName")
            if ntag == 0xA0:
                _general_names(buf, ns, ne, _scratch())
            else:
                _rdn(buf, ns, ne)  # nameRelativeToCRLIssuer
        elif tag == 0x81:
            _check_primitive(_BITS, buf[fs:fe])
        else:
            _general_names(buf, fs, fe, _scratch())


def _scratch() -> dict[int, list[str]]:
    return {0x81: [], 0x82: [], 0x86: [], 0x87: []}


def parse_der(der: bytes) -> CertFacts:
    """Identity facts of one DER certificate (raises CertParseError, and nothing else)."""
    try:
        return _parse(bytes(der))
    except CertParseError:
        raise
    except (ValueError, IndexError, TypeError, RecursionError) as e:
        raise CertParseError(f"malformed certificate: {e}") from None


def tbs_fields(der: bytes, what: str, version_tag: int) -> list[tuple[int, int, int, int]]:
    """(tag, start, end, header start) of each field of a signed structure's to-be-signed part
    (certificate or CRL), without its optional version field. The structure must fill `der`
    exactly and be SEQUENCE { SEQUENCE tbs, SEQUENCE algorithm, BIT STRING signature }."""
    tag, s, e = _tlv(der, 0, len(der))
    if tag != _SEQ:
        raise CertParseError(f"not a {what}")
    if e != len(der):
        raise CertParseError(f"trailing bytes after the {what}")
    outer = list(_children(der, s, e))
    if [f[0] for f in outer] != [_SEQ, _SEQ, _BITS]:
        raise CertParseError(f"not a {what}")
    _, ts, te, _ = outer[0]
    fields = list(_children(der, ts, te))
    if fields and fields[0][0] == version_tag:
        fields = fields[1:]
    return fields


_TBS_TAGS = (_INT, _SEQ, _SEQ, _SEQ, _SEQ, _SEQ)  # serial, signature, issuer, validity, ...
_TBS_OPTIONAL = (0x81, 0x82, 0xA3)  # issuerUniqueID, subjectUniqueID, extensions


def _algorithm(der: bytes, field: tuple) -> None:
    """AlgorithmIdentifier ::= SEQUENCE { OID, parameters OPTIONAL }"""
    parts = list(_children(der, field[1], field[2]))
    if not 1 <= len(parts) <= 2 or parts[0][0] != _OID:
        raise CertParseError("bad AlgorithmIdentifier")


def _parse(der: bytes) -> CertFacts:
    _, s, _ = _tlv(der, 0, len(der))
    tag, ts, te = _tlv(der, s, len(der))
    if tag == _SEQ:
        vtag, vs, ve = _tlv(der, ts, te)
        if vtag == 0xA0:  # explicit [0] version: v2 or v3 (v1 is left out in DER)
            is_, ie = _only(der, vs, ve, _INT, "version")
            if der[is_:ie] not in (b"\x01", b"\x02"):
                raise CertParseError("bad certificate version")
    fields = tbs_fields(der, "certificate", 0xA0)
    if tuple(f[0] for f in fields[:6]) != _TBS_TAGS:
        raise CertParseError("malformed TBSCertificate")
    _, s, e = _tlv(der, 0, len(der))
    outer_alg = list(_children(der, s, e))[1]
    _algorithm(der, fields[1])
    _algorithm(der, outer_alg)
    optional = [f[0] for f in fields[6:]]
    if any(t not in _TBS_OPTIONAL for t in optional) or optional != sorted(set(optional)):
        raise CertParseError("malformed TBSCertificate")
    _check_der(der, 0, len(der))
    validity, subject, spki = fields[3], fields[4], fields[5]
    times = list(_children(der, validity[1], validity[2]))
    if len(times) != 2:
        raise CertParseError("bad validity")
    not_before = _time(times[0][0], der[times[0][1] : times[0][2]])
    serial = format(int.from_bytes(der[fields[0][1] : fields[0][2]], "big"), "x")
    not_after = _time(times[1][0], der[times[1][1] : times[1][2]])
    issuer_text, _ = _name(der, fields[2][1], fields[2][2])
    subject_text, attrs = _name(der, subject[1], subject[2])
    spki_der = der[spki[3] : spki[2]]
    key = list(_children(der, spki[1], spki[2]))
    if [k[0] for k in key] != [_SEQ, _BITS] or der[key[1][1]] != 0:
        raise CertParseError("bad SubjectPublicKeyInfo")
    _algorithm(der, key[0])
    facts: dict = {"san": _scratch(), "ca": False}
    seen: set[str] = set()
    for f in fields[6:]:
        if f[0] != 0xA3:
            continue
        xs, xe = _only(der, f[1], f[2], _SEQ, "extensions")
        if xs == xe:
            raise CertParseError("empty extensions")
        for tag, es, ee, _ in _children(der, xs, xe):
            parts = list(_children(der, es, ee))
            kinds = [p[0] for p in parts]
            if tag != _SEQ or kinds not in ([_OID, _OCTETS], [_OID, _BOOL, _OCTETS]):
                raise CertParseError("bad Extension")
            if kinds[1] == _BOOL and der[parts[1][1]] == 0:
                raise CertParseError("Extension critical FALSE encoded (DER omits the default)")
            oid = _oid(der[parts[0][1] : parts[0][2]])
            if oid in seen:
                raise CertParseError(f"duplicate extension {oid}")
            seen.add(oid)
            _extension(der, oid, parts[-1][1], parts[-1][2], facts)
    san = facts["san"]
    return CertFacts(
        subject_text, attrs, tuple(san[0x82]), tuple(san[0x87]), tuple(san[0x86]),
        not_after, spki_der, facts["ca"], not_before, serial, issuer_text,
    )  # fmt: skip


_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")


def pem_certificates(data: bytes) -> list[bytes]:
    """DER of every certificate in a PEM file (a bundle yields several, in file order)."""
    return [ssl.PEM_cert_to_DER_cert(m.group().decode("ascii")) for m in _PEM.finditer(data)]


def sha256_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def spki_of(der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a certificate (what `spki_sha256` pins hash)."""
    return parse_der(der).spki
