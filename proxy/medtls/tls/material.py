"""Everything a configuration generation needs at run time: config plus ready SSL contexts.

`validate(config)` is THE validation of TLS material: `medtls check`, the daemon's start and
every reload call it, so check can never pass what reload refuses, or the other way round.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from medtls.config import Config
from medtls.config.profiles import PROFILES
from medtls.core import certinfo
from medtls.core.certinfo import CertInfo
from medtls.core.certparse import CertFacts, parse_der, pem_certificates
from medtls.tls.context import TLSSetupError, apply_profile, build_context, read_passphrase


@dataclass
class Generation:
    """One configuration generation as the engine serves it: the config and its ready contexts."""

    config: Config
    generation: int
    outbound_ctx: dict[str, ssl.SSLContext] = field(default_factory=dict)
    inbound_ctx: dict[str, ssl.SSLContext] = field(default_factory=dict)
    certificates: list[CertInfo] = field(default_factory=list)
    # outbound route name -> (newest session with a ticket, time.monotonic() when stored)
    sessions: dict[str, tuple[ssl.SSLSession, float]] = field(default_factory=dict)

    def server_contexts(self) -> list[ssl.SSLContext]:
        return list({id(c): c for c in self.inbound_ctx.values()}.values())


def _load_certs(path: Path) -> tuple[list[bytes], list[CertFacts]]:
    try:
        ders = pem_certificates(path.read_bytes())
        return ders, [parse_der(der) for der in ders]
    except (OSError, ValueError):
        return [], []  # unreadable material is reported by build_context with its own message


def _cert_infos(role: str, key: str, path: Path, loaded=None) -> list[CertInfo]:
    ders, facts = loaded or _load_certs(path)
    return certinfo.certificate_infos(role, key, str(path), ders, facts)


def _crl_infos(path: Path) -> list[CertInfo]:
    try:
        return certinfo.crl_infos("trust.crl", str(path), path.read_bytes())
    except (OSError, ValueError):
        return []  # build_context has refused an unusable trust.crl already


def reject_expired_identity(path: Path, certs: list[CertFacts], now: datetime) -> None:
    """Refuse to present an expired leaf. A clock that lags (a Pi without RTC starts in 1970)
    never makes a valid certificate look expired, so this is safe before time sync."""
    if certs and certs[0].not_after < now:
        raise TLSSetupError(
            f"identity.certificate: {path}: certificate expired on "
            f"{certs[0].not_after:%Y-%m-%dT%H:%M:%SZ}"
        )


def pinned_identity(ident):
    """Certificate and key in one directory reached through a symlink (enrollment's `live`,
    swapped atomically to a new generation): resolve the symlink once, so both files come from
    the same generation even when the swap happens between the two reads."""
    cdir = ident.certificate.parent
    if cdir == ident.key.parent and cdir.is_symlink():
        real = cdir.resolve()
        return replace(ident, certificate=real / ident.certificate.name, key=real / ident.key.name)
    return ident


def awaiting_enrollment(config: Config) -> str | None:
    """With enrollment and no identity certificate installed yet: why the box cannot serve (it
    starts fail closed, opens no listener, and a reload after `medtls enroll` installed one
    brings it into service); None otherwise (start validates as always)."""
    if config.enrollment is None or config.identity.certificate.exists():
        return None
    return (
        f"enrolling: no identity certificate yet ({config.identity.certificate} does not exist); "
        "no connection is accepted until enrollment installs one"
    )


def validate(config: Config, generation: int = 0) -> Generation:
    """Load every key/certificate/CA, build one SSLContext per route, and prove in a handshake
    over memory that our identity works in each role and profile it is used in; raises
    TLSSetupError naming the key path and file. The one validation of check, start and reload."""
    configured, shown = config, config.identity.certificate
    ident = pinned_identity(config.identity)
    if ident is not config.identity:
        config = replace(config, identity=ident)
    ident_loaded = _load_certs(ident.certificate)
    reject_expired_identity(ident.certificate, ident_loaded[1], datetime.now(UTC))
    passphrase = read_passphrase(ident.key_passphrase_file)
    cache: dict[tuple, ssl.SSLContext] = {}

    def ctx(server: bool, profile: str, ca: Path) -> ssl.SSLContext:
        key = (server, profile, ca)
        if key not in cache:
            cache[key] = build_context(
                server, profile, ca, ident.certificate, ident.key, passphrase,
                config.session_lifetime, config.trust_crl, config.crl_check, ident.ca,
            )  # fmt: skip
        return cache[key]

    rt = Generation(config=configured, generation=generation)
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
    prove_identity(config, passphrase)
    ident_key = "identity.certificate"
    rt.certificates = _cert_infos(certinfo.IDENTITY, ident_key, shown, ident_loaded)
    rt.certificates += _cert_infos(certinfo.CA, "trust.ca", config.trust_ca)
    if config.trust_crl is not None:
        rt.certificates += _crl_infos(config.trust_crl)
    for i, peer in enumerate(config.outbound):
        if peer.verify and peer.verify.ca:
            key = f"outbound[{i}].verify.ca"
            rt.certificates += _cert_infos(certinfo.PEER_CA, key, peer.verify.ca)
    for i, port in enumerate(config.inbound):
        if port.ca:
            rt.certificates += _cert_infos(certinfo.PEER_CA, f"inbound[{i}].ca", port.ca)
    return rt


# X509_V_ERR_INVALID_PURPOSE (openssl/x509_vfy.h): the extended key usage lacks the role.
_INVALID_PURPOSE = 26
# X509_V_FLAG_NO_CHECK_TIME: a box without RTC starts in 1970 and must still start; expiry is
# checked on its own (reject_expired_identity), in the direction a lagging clock cannot err.
_NO_CHECK_TIME = 0x200000
_PROFILE_HINTS = {
    "aes-legacy": "its only cipher suite, TLS_RSA_WITH_AES_128_CBC_SHA, needs an RSA key",
}


@dataclass(frozen=True)
class _Role:
    server: bool  # True: we are the TLS server (inbound ports)
    profile: str
    ca: Path  # what this route verifies its peers with (sets up our context as in serving)
    where: str  # the first route that uses this role and profile, e.g. "outbound[0] 'pacs'"
    profile_key: str  # the key that chose the profile: tls.profile or <route>.profile


def _roles(config: Config) -> list[_Role]:
    roles: dict[tuple[bool, str], _Role] = {}
    for i, peer in enumerate(config.outbound):
        if not peer.plaintext:
            ca = (peer.verify.ca if peer.verify else None) or config.trust_ca
            key = f"outbound[{i}].profile" if peer.profile else "tls.profile"
            prof = config.outbound_profile(peer)
            roles.setdefault((False, prof), _Role(False, prof, ca, f"outbound[{i}] '{peer.name}'",
                                                  key))  # fmt: skip
    for i, port in enumerate(config.inbound):
        key = f"inbound[{i}].profile" if port.profile else "tls.profile"
        prof = config.inbound_profile(port)
        roles.setdefault((True, prof), _Role(True, prof, port.ca or config.trust_ca,
                                             f"inbound[{i}] '{port.name}'", key))  # fmt: skip
    if not roles:
        # No route uses the identity yet: still prove that it chains (its usage is unknown).
        return [_Role(True, config.profile, config.trust_ca, "no route yet", "tls.profile")]
    return list(roles.values())


def identity_cas(config: Config) -> list[Path]:
    """The CAs our identity is validated against: identity.ca, or else every CA configured for
    peers (they trust the CA that issued them, and usually ours with it)."""
    if config.identity.ca is not None:
        return [config.identity.ca]
    cas = [config.trust_ca]
    cas += [p.verify.ca for p in config.outbound if p.verify and p.verify.ca]
    cas += [p.ca for p in config.inbound if p.ca]
    return list(dict.fromkeys(cas))


def _verifier(role: _Role, cas: list[Path], config: Config, passphrase) -> ssl.SSLContext:
    """A peer of `role` that verifies our certificate the way OpenSSL does in a real handshake
    (chain and extended key usage for the role: clientAuth from a server, serverAuth from a
    client; a certificate without the extension is valid for any use)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if role.server else ssl.PROTOCOL_TLS_SERVER)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= _NO_CHECK_TIME
    apply_profile(ctx, PROFILES[role.profile])
    for ca in cas:
        ctx.load_verify_locations(cafile=str(ca))
    if not role.server:  # the verifying server must present a certificate of the same kind
        ident = config.identity
        ctx.load_cert_chain(str(ident.certificate), str(ident.key), lambda: passphrase or b"")
    return ctx


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> list[ssl.SSLError | None]:
    """[client error, server error] of a handshake over memory BIOs (None: that side is done)."""
    bios = [ssl.MemoryBIO() for _ in range(4)]
    objs = [
        client.wrap_bio(bios[0], bios[1], server_side=False),
        server.wrap_bio(bios[2], bios[3], server_side=True),
    ]
    errors: list[ssl.SSLError | None] = [None, None]
    done = [False, False]
    for _ in range(10):
        for i, obj in enumerate(objs):
            if done[i] or errors[i] is not None:
                continue
            try:
                obj.do_handshake()
                done[i] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as e:
                errors[i] = e
        bios[2].write(bios[1].read())
        bios[0].write(bios[3].read())
        if all(d or e is not None for d, e in zip(done, errors, strict=True)):
            break
    return errors


def prove_identity(config: Config, passphrase: bytes | None) -> None:
    """For every role (client of outbound TLS routes, server of inbound ports) and profile in
    use, a handshake over memory between our context and a peer that verifies us against
    identity_cas(config): what every real peer will do. Raises TLSSetupError with the reason."""
    ident = config.identity
    cas = identity_cas(config)
    against = (
        f"identity.ca {ident.ca}"
        if ident.ca is not None
        else "trust.ca"
        + (" or a route's CA" if len(cas) > 1 else "")
        + f" ({cas[0]}"
        + (", ..." if len(cas) > 1 else "")
        + "; set identity.ca if another CA issued it)"
    )
    for role in _roles(config):
        ours = build_context(
            role.server, role.profile, role.ca, ident.certificate, ident.key, passphrase,
            identity_ca=ident.ca,
        )  # fmt: skip
        ours.verify_mode = ssl.CERT_NONE  # only the verifier's judgement of us matters here
        try:
            peer = _verifier(role, cas, config, passphrase)
        except (ssl.SSLError, OSError) as e:
            raise TLSSetupError(
                f"identity: cannot prepare the check of {role.where}: {e}"
            ) from None
        client, server = (peer, ours) if role.server else (ours, peer)
        errors = _handshake(client, server)
        theirs, mine = (errors[0], errors[1]) if role.server else (errors[1], errors[0])
        err = theirs or mine
        if err is None:
            continue
        cert = f"identity.certificate: {ident.certificate}"
        if isinstance(err, ssl.SSLCertVerificationError):
            if err.verify_code == _INVALID_PURPOSE and role.where == "no route yet":
                continue
            if err.verify_code == _INVALID_PURPOSE:
                usage, use = ("clientAuth", "outbound TLS routes")
                if role.server:
                    usage, use = ("serverAuth", "inbound ports")
                raise TLSSetupError(
                    f"{cert}: extended key usage lacks {usage}, needed for {use} ({role.where})"
                )
            raise TLSSetupError(f"{cert}: does not chain to {against}: {err.verify_message}")
        reason = (getattr(err, "reason", None) or str(err)).lower().replace("_", " ")
        hint = _PROFILE_HINTS.get(role.profile)
        raise TLSSetupError(
            f"identity.key: {ident.key}: {role.profile_key} '{role.profile}' (used by "
            f"{role.where}) cannot work with this key: {reason}" + (f" ({hint})" if hint else "")
        )


__all__ = ["CertInfo", "Generation", "TLSSetupError", "validate"]
