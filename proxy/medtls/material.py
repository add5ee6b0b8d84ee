"""Everything a configuration generation needs at run time: config plus ready SSL contexts."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from medtls.certparse import CertFacts, parse_der, pem_certificates
from medtls.config import Config
from medtls.tlsctx import TLSSetupError, build_context, read_passphrase


@dataclass(frozen=True)
class CertInfo:
    role: str  # config key path, e.g. "identity.certificate"
    path: str
    subject: str
    not_after: str  # ISO 8601 UTC


@dataclass
class Runtime:
    config: Config
    generation: int
    outbound_ctx: dict[str, ssl.SSLContext] = field(default_factory=dict)
    inbound_ctx: dict[str, ssl.SSLContext] = field(default_factory=dict)
    certificates: list[CertInfo] = field(default_factory=list)
    # outbound route name -> (newest session with a ticket, time.monotonic() when stored)
    sessions: dict[str, tuple[ssl.SSLSession, float]] = field(default_factory=dict)

    def server_contexts(self) -> list[ssl.SSLContext]:
        return list({id(c): c for c in self.inbound_ctx.values()}.values())


def _load_certs(path: Path) -> list[CertFacts]:
    try:
        return [parse_der(der) for der in pem_certificates(path.read_bytes())]
    except (OSError, ValueError):
        return []  # unreadable material is reported by build_context with its own message


def _cert_infos(role: str, path: Path, certs: list[CertFacts] | None = None) -> list[CertInfo]:
    if certs is None:
        certs = _load_certs(path)
    return [CertInfo(role, str(path), c.subject, c.not_after.isoformat()) for c in certs]


def reject_expired_identity(path: Path, certs: list[CertFacts], now: datetime) -> None:
    """Refuse to present an expired leaf. A clock that lags (a Pi without RTC starts in 1970)
    never makes a valid certificate look expired, so this is safe before time sync."""
    if certs and certs[0].not_after < now:
        raise TLSSetupError(
            f"identity.certificate: {path}: certificate expired on "
            f"{certs[0].not_after:%Y-%m-%dT%H:%M:%SZ}"
        )


def build_runtime(config: Config, generation: int) -> Runtime:
    """Load every key/certificate/CA and build one SSLContext per route (raises TLSSetupError)."""
    ident = config.identity
    ident_certs = _load_certs(ident.certificate)
    reject_expired_identity(ident.certificate, ident_certs, datetime.now(UTC))
    passphrase = read_passphrase(ident.key_passphrase_file)
    cache: dict[tuple, ssl.SSLContext] = {}

    def ctx(server: bool, profile: str, ca: Path) -> ssl.SSLContext:
        key = (server, profile, ca)
        if key not in cache:
            cache[key] = build_context(
                server, profile, ca, ident.certificate, ident.key, passphrase,
                config.session_lifetime, config.trust_crl, config.crl_check,
            )  # fmt: skip
        return cache[key]

    rt = Runtime(config=config, generation=generation)
    for peer in config.outbound:
        if not peer.plaintext:
            ca = (peer.verify.ca if peer.verify else None) or config.trust_ca
            rt.outbound_ctx[peer.name] = ctx(False, config.outbound_profile(peer), ca)
    for port in config.inbound:
        rt.inbound_ctx[port.name] = ctx(
            True, config.inbound_profile(port), port.ca or config.trust_ca
        )
    if not config.outbound and not config.inbound:
        # Still prove the identity loads, so `check` and reload reject broken material.
        ctx(True, config.profile, config.trust_ca)
    rt.certificates = _cert_infos("identity.certificate", ident.certificate, ident_certs)
    rt.certificates += _cert_infos("trust.ca", config.trust_ca)
    for i, peer in enumerate(config.outbound):
        if peer.verify and peer.verify.ca:
            rt.certificates += _cert_infos(f"outbound[{i}].verify.ca", peer.verify.ca)
    for i, port in enumerate(config.inbound):
        if port.ca:
            rt.certificates += _cert_infos(f"inbound[{i}].ca", port.ca)
    return rt


__all__ = ["CertInfo", "Runtime", "TLSSetupError", "build_runtime"]
