"""Routing and identity decisions as plain functions (no sockets, no ssl objects)."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from medtls.certparse import parse_der, spki_of
from medtls.config import AllowRule, Config, InboundPort, OutboundPeer, Verify, parse_dn


@dataclass(frozen=True)
class CertIdentity:
    """The identity facts of a peer certificate that policies match against."""

    subject: str  # RFC 4514, e.g. "CN=pacs,O=Hospital"
    subject_parts: tuple[tuple[str, str], ...]  # sorted (TYPE, value)
    cns: tuple[str, ...]
    dns: tuple[str, ...]  # lower-case
    ips: tuple[str, ...]  # normalised
    uris: tuple[str, ...]
    der: bytes = field(repr=False, compare=False, default=b"")

    @cached_property
    def spki_sha256(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex (computed on first use)."""
        return hashlib.sha256(spki_of(self.der)).hexdigest()

    def describe(self) -> str:
        extra = []
        if self.dns:
            extra.append("dns=" + "|".join(self.dns))
        if self.ips:
            extra.append("ip=" + "|".join(self.ips))
        return self.subject + (f" ({', '.join(extra)})" if extra else "")


def cert_identity(der: bytes) -> CertIdentity:
    """Identity of a DER certificate (stdlib only: the serving process never loads cryptography)."""
    facts = parse_der(der)
    return CertIdentity(
        subject=facts.subject,
        subject_parts=parse_dn(facts.subject) or (),
        cns=facts.cns,
        dns=tuple(n.lower() for n in facts.dns),
        ips=facts.ips,
        uris=facts.uris,
        der=bytes(der),
    )


_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "domainComponent": "DC",
}
_RFC4514_SPECIAL = frozenset(',+"\\<>;=#')


def identity_from_peercert(info: dict, der: bytes) -> CertIdentity:
    """Same result as `cert_identity(der)`, from the dict ssl already parsed (hot path).

    Falls back to a full parse for anything the short form would render differently from
    RFC 4514 (unknown attribute types, multi-valued RDNs, characters needing escapes).
    """
    parts = []
    for rdn in info.get("subject", ()):
        if len(rdn) != 1:
            return cert_identity(der)
        key, value = rdn[0]
        short = _SHORT.get(key)
        if short is None or not value or value[0] == " " or value[-1] == " ":
            return cert_identity(der)
        if _RFC4514_SPECIAL.intersection(value):
            return cert_identity(der)
        parts.append((short, value))
    dns, ips, uris = [], [], []
    for kind, value in info.get("subjectAltName", ()):
        if kind == "DNS":
            dns.append(value.lower())
        elif kind == "IP Address":
            ips.append(_norm_ip(value.strip()))
        elif kind == "URI":
            uris.append(value)
    return CertIdentity(
        subject=",".join(f"{k}={v}" for k, v in reversed(parts)),
        subject_parts=tuple(sorted(parts)),
        cns=tuple(v for k, v in parts if k == "CN"),
        dns=tuple(dns),
        ips=tuple(ips),
        uris=tuple(uris),
        der=der,
    )


# Peer identities by certificate (DER): the same few peers reconnect all day, and the identity
# is a function of the certificate alone. The chain and validity are still verified by OpenSSL
# in every handshake; only the parsing of subject and SANs is skipped.
IDENTITY_CACHE_SIZE = 128
_identities: dict[bytes, CertIdentity] = {}


def peer_identity(der: bytes, peercert) -> CertIdentity:
    """`identity_from_peercert(peercert(), der)`, remembered per certificate (loop thread only)."""
    ident = _identities.get(der)
    if ident is None:
        ident = identity_from_peercert(peercert(), der)
        if len(_identities) >= IDENTITY_CACHE_SIZE:
            del _identities[next(iter(_identities))]  # the oldest entry
        _identities[der] = ident
    return ident


def _dns_match(pattern: str, names: tuple[str, ...]) -> bool:
    # Exact match; a certificate wildcard covers exactly one left-most label.
    pattern = pattern.lower().rstrip(".")
    for name in names:
        name = name.rstrip(".")
        if name == pattern:
            return True
        if name.startswith("*.") and "." in pattern and pattern.split(".", 1)[1] == name[2:]:
            return True
    return False


@lru_cache(maxsize=1024)
def _norm_ip(text: str) -> str:
    # Cached: rules, peers' IP SANs and client addresses repeat from connection to connection.
    return str(ipaddress.ip_address(text))


def _subject_match(expected: str, ident: CertIdentity) -> bool:
    want = parse_dn(expected)
    return want is not None and want == ident.subject_parts


def verify_mismatches(verify: Verify, ident: CertIdentity) -> list[str]:
    """Return what does not match (empty list = accepted) for an outbound peer."""
    bad = []
    if verify.ip is not None and _norm_ip(verify.ip) not in ident.ips:
        bad.append(f"IP SAN {verify.ip} not in {list(ident.ips)}")
    if verify.dns is not None and not _dns_match(verify.dns, ident.dns):
        bad.append(f"DNS SAN {verify.dns} not in {list(ident.dns)}")
    if verify.cn is not None and verify.cn not in ident.cns:
        bad.append(f"CN {verify.cn!r} != {list(ident.cns)}")
    if verify.subject is not None and not _subject_match(verify.subject, ident):
        bad.append(f"subject {verify.subject!r} != {ident.subject!r}")
    if verify.spki_sha256 is not None and verify.spki_sha256 != ident.spki_sha256:
        bad.append(f"SPKI sha256 {ident.spki_sha256} not pinned")
    return bad


def allow_rule_matches(rule: AllowRule, ident: CertIdentity, source_ip: str) -> bool:
    if rule.cn is not None and rule.cn not in ident.cns:
        return False
    if rule.dns is not None and not _dns_match(rule.dns, ident.dns):
        return False
    if rule.uri is not None and rule.uri not in ident.uris:
        return False
    if rule.ip_san is not None and _norm_ip(rule.ip_san) not in ident.ips:
        return False
    if rule.subject is not None and not _subject_match(rule.subject, ident):
        return False
    if rule.spki_sha256 is not None and rule.spki_sha256 != ident.spki_sha256:
        return False
    return not (rule.ip is not None and _norm_ip(rule.ip) != _norm_ip(source_ip))


def acl_allows(port: InboundPort, ident: CertIdentity, source_ip: str) -> int | None:
    """Index of the first allow entry that admits the client, or None (default deny)."""
    for i, rule in enumerate(port.allow):
        if allow_rule_matches(rule, ident, source_ip):
            return i
    return None


def route_outbound(config: Config, dst_ip: str, dst_port: int) -> OutboundPeer | None:
    """The peer entry for an intercepted original destination (default deny: None)."""
    ip = _norm_ip(dst_ip)
    for peer in config.outbound:
        if peer.address == ip and peer.port == dst_port:
            return peer
    return None


def route_inbound(config: Config, dst_port: int) -> InboundPort | None:
    for port in config.inbound:
        if port.port == dst_port:
            return port
    return None


def unmap_v4(ip: str) -> str:
    """``::ffff:1.2.3.4`` -> ``1.2.3.4`` (dual-stack sockets report mapped addresses)."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip
