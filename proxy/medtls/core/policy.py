"""Routing and identity decisions as plain functions (no sockets, no ssl objects)."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from medtls.config import AllowRule, Config, InboundPort, OutboundPeer, Verify, parse_dn
from medtls.core.certparse import CertParseError, parse_der


@dataclass(frozen=True)
class CertIdentity:
    """The identity facts of a peer certificate that policies match against."""

    subject: str  # RFC 4514, e.g. "CN=pacs,O=Hospital"
    subject_parts: tuple[tuple[str, str], ...]  # sorted (TYPE, value)
    cns: tuple[str | bytes, ...]  # every CN attribute of the subject, in certificate order
    dns: tuple[str, ...]  # lower-case
    ips: tuple[str, ...]  # normalised
    uris: tuple[str, ...]
    der: bytes = field(repr=False, compare=False, default=b"")
    spki: bytes = field(repr=False, compare=False, default=b"")
    ca: bool = False  # basicConstraints cA=TRUE (refused as a peer by `peer_identity`)

    @cached_property
    def spki_sha256(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex (computed on first use)."""
        return hashlib.sha256(self.spki).hexdigest()

    def describe(self) -> str:
        extra = []
        if self.dns:
            extra.append("dns=" + "|".join(self.dns))
        if self.ips:
            extra.append("ip=" + "|".join(self.ips))
        return self.subject + (f" ({', '.join(extra)})" if extra else "")


def cert_identity(der: bytes) -> CertIdentity:
    """Identity of a DER certificate, read by the strict stdlib DER reader (the serving process
    never loads cryptography). Raises CertParseError, and nothing else, for bytes that are not
    a DER certificate (see certparse's strictness contract)."""
    facts = parse_der(der)
    return CertIdentity(
        subject=facts.subject,
        subject_parts=parse_dn(facts.subject) or (),
        cns=tuple(v for k, v in facts.subject_attrs if k == "CN"),
        dns=tuple(n.lower() for n in facts.dns),
        ips=facts.ips,
        uris=facts.uris,
        der=bytes(der),
        spki=facts.spki,
        ca=facts.ca,
    )


# Peer identities by certificate (DER): the same few peers reconnect all day, and the identity
# (or its refusal) is a function of the certificate alone. The chain and validity are still
# verified by OpenSSL in every handshake; only the parsing of subject and SANs is skipped.
IDENTITY_CACHE_SIZE = 128
_identities: dict[bytes, CertIdentity | CertParseError] = {}


def peer_identity(der: bytes) -> CertIdentity:
    """The identity of a peer's certificate (the DER OpenSSL verified), remembered per
    certificate (loop thread only). Raises CertParseError when the bytes are not strict DER or
    the certificate is a CA's (basicConstraints cA=TRUE): a CA is not a peer identity."""
    ident = _identities.get(der)
    if ident is None:
        try:
            ident = cert_identity(der)
            if ident.ca:
                raise CertParseError("a CA certificate (basicConstraints cA=TRUE) is not a peer")
        except CertParseError as e:
            ident = e
        if len(_identities) >= IDENTITY_CACHE_SIZE:
            del _identities[next(iter(_identities))]  # the oldest entry
        _identities[der] = ident
    if isinstance(ident, CertParseError):
        raise CertParseError(*ident.args)
    return ident


def _dns_match(pattern: str, names: tuple[str, ...], wildcards: bool) -> bool:
    # Exact match; with `wildcards` (a server's certificate only) a certificate wildcard covers
    # exactly one left-most label.
    pattern = pattern.lower().rstrip(".")
    for name in names:
        name = name.rstrip(".")
        if name == pattern:
            return True
        if (
            wildcards
            and name.startswith("*.")
            and "." in pattern
            and pattern.split(".", 1)[1] == name[2:]
        ):
            return True
    return False


def _cn_match(expected: str, ident: CertIdentity) -> bool:
    # A subject with several CNs names no one in particular: it matches no `cn:` rule.
    return ident.cns == (expected,)


@lru_cache(maxsize=1024)
def _norm_ip(text: str) -> str:
    # Cached: rules, peers' IP SANs and client addresses repeat from connection to connection.
    return str(ipaddress.ip_address(text))


def _subject_match(expected: str, ident: CertIdentity) -> bool:
    want = parse_dn(expected)
    return want is not None and want == ident.subject_parts


def verify_results(verify: Verify, ident: CertIdentity) -> list[tuple[str, str, str | None]]:
    """Each configured rule of an outbound peer's `verify`: (key, expected value, None when it
    matches or what does not match). `medtls probe` reports them one by one."""
    out: list[tuple[str, str, str | None]] = []
    if verify.ip is not None:
        ok = _norm_ip(verify.ip) in ident.ips
        out.append(
            ("ip", verify.ip, None if ok else f"IP SAN {verify.ip} not in {list(ident.ips)}")
        )
    if verify.dns is not None:
        ok = _dns_match(verify.dns, ident.dns, wildcards=True)
        out.append(
            ("dns", verify.dns, None if ok else f"DNS SAN {verify.dns} not in {list(ident.dns)}")
        )
    if verify.cn is not None:
        ok = _cn_match(verify.cn, ident)
        out.append(("cn", verify.cn, None if ok else f"CN {verify.cn!r} != {list(ident.cns)}"))
    if verify.subject is not None:
        ok = _subject_match(verify.subject, ident)
        bad = f"subject {verify.subject!r} != {ident.subject!r}"
        out.append(("subject", verify.subject, None if ok else bad))
    if verify.spki_sha256 is not None:
        ok = verify.spki_sha256 == ident.spki_sha256
        bad = f"SPKI sha256 {ident.spki_sha256} not pinned"
        out.append(("spki_sha256", verify.spki_sha256, None if ok else bad))
    return out


def verify_mismatches(verify: Verify, ident: CertIdentity) -> list[str]:
    """Return what does not match (empty list = accepted) for an outbound peer."""
    return [bad for _key, _want, bad in verify_results(verify, ident) if bad is not None]


def allow_rule_matches(rule: AllowRule, ident: CertIdentity, source_ip: str) -> bool:
    if rule.cn is not None and not _cn_match(rule.cn, ident):
        return False
    if rule.dns is not None and not _dns_match(rule.dns, ident.dns, wildcards=False):
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


def calling_ae_allowed(rule: AllowRule, calling_ae: str) -> bool:
    """Whether the allow entry that admitted a client lets it call as `calling_ae` (a
    `protocol: dicom` port): any title when the entry has no `calling_ae` list, else one of
    them, compared exactly (AE titles are case sensitive; surrounding spaces do not count)."""
    return rule.calling_ae is None or calling_ae.strip(" ") in rule.calling_ae


def binds_calling_ae(port: InboundPort, rule_index: int | None) -> bool:
    """Whether a client admitted by entry `rule_index` must show its calling AE title before
    anything reaches the device."""
    return (
        port.protocol == "dicom"
        and rule_index is not None
        and port.allow[rule_index].calling_ae is not None
    )
