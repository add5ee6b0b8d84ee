"""Build ssl.SSLContext objects from profiles and material: the policy.

The calls Python's ssl module lacks (TLS 1.3 suites per context, tickets, the chain we send,
CRLs) are in openssl.py, the one module that reaches into OpenSSL.
"""

from __future__ import annotations

import ssl
import warnings
from functools import cache
from pathlib import Path

from medtls.config.profiles import (
    PROFILES,
    Profile,
    client_tls13_order,
    cpu_has_aes,
    tls13_suite_list,
)
from medtls.tls import TLSSetupError
from medtls.tls.openssl import (
    add_crl_der,
    build_own_chain,
    configure_tickets,
    enable_dh_auto,
    install_client_judge,
    set_chain_store,
    set_tls13_suites,
)

# Server: when the client lists ChaCha20-Poly1305 first (a CPU without AES instructions),
# choose it over our AES preference. Python's ssl module has no name for this option.
SSL_OP_PRIORITIZE_CHACHA = 1 << 21


@cache
def local_cpu_has_aes() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return cpu_has_aes(f.read())
    except OSError:
        return True


def read_passphrase(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TLSSetupError(f"cannot read key passphrase file {path}: {e.strerror}") from None
    return data.rstrip(b"\r\n")


def apply_profile(ctx: ssl.SSLContext, profile: Profile, has_aes: bool = True) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 only in aes-legacy
        ctx.minimum_version = ssl.TLSVersion[profile.min_version]
        ctx.maximum_version = ssl.TLSVersion[profile.max_version]
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.set_ciphers(profile.tls12_ciphers)
    except ssl.SSLError:
        raise TLSSetupError(f"OpenSSL accepts none of the {profile.name} TLS 1.2 ciphers") from None
    suites = client_tls13_order(tls13_suite_list(profile), has_aes)
    if suites:
        set_tls13_suites(ctx, suites)
    else:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    enable_dh_auto(ctx)


def build_context(
    server: bool,
    profile_name: str,
    ca: Path,
    certificate: Path,
    key: Path,
    passphrase: bytes | None,
    session_lifetime: int = 0,
    crl: Path | None = None,
    crl_check: str = "leaf",
    identity_ca: Path | None = None,
) -> ssl.SSLContext:
    """A context that always requires and verifies the peer certificate against `ca`.

    Names are not checked here: the caller matches the peer's identity against its policy.
    `identity_ca` (identity.ca): the CAs our own certificate chains to, when not the peers' CA;
    the chain we send is built from it, and it is never trusted for peers.
    """
    profile = PROFILES[profile_name]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Some Python builds set it by default; with it, a FIN without close_notify reads as a clean
    # end and a truncated stream would pass for a complete one (relay.Truncated).
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    # A server keeps the profile order; its peers' CPUs decide via SSL_OP_PRIORITIZE_CHACHA.
    apply_profile(ctx, profile, has_aes=True if server else local_cpu_has_aes())
    if server:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA
        configure_tickets(ctx, session_lifetime)
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as e:
        raise TLSSetupError(f"{ca}: cannot load CA bundle: {_ssl_msg(e)}") from None
    try:
        ctx.load_cert_chain(str(certificate), str(key), password=lambda: passphrase or b"")
    except ssl.SSLError as e:
        raise TLSSetupError(_load_error(e, certificate, key, passphrase)) from None
    except OSError as e:
        raise TLSSetupError(f"identity: {certificate} / {key}: {e.strerror or e}") from None
    if identity_ca is not None:
        set_chain_store(ctx, identity_ca)
    build_own_chain(ctx, certificate)
    if crl is not None:
        load_crls(ctx, crl, crl_check)
    if server:
        install_client_judge(ctx)  # after every verify setting: it keeps the verify mode
    return ctx


def load_crls(ctx: ssl.SSLContext, crl: Path, check: str = "leaf") -> None:
    """Check every peer certificate (`chain`: and its CAs) against the CRLs in `crl`.

    OpenSSL then refuses a revoked certificate, and also one whose issuer has no CRL in the
    file or only an expired one: a revocation list that cannot be trusted fails closed.
    """
    read_crls(crl, ctx)
    ctx.verify_flags |= (
        ssl.VERIFY_CRL_CHECK_CHAIN if check == "chain" else ssl.VERIFY_CRL_CHECK_LEAF
    )


def read_crls(crl: Path, ctx: ssl.SSLContext | None = None) -> list:
    """The CRLs of `trust.crl` (crlparse.CrlBlock), block by block, each one parsed by OpenSSL
    as a whole CRL and, with `ctx`, added to its trust store; TLSSetupError naming the file and
    the block otherwise. `check`, start and reload all read the file through here.
    """
    from medtls.core.crlparse import crl_blocks  # only configurations with a CRL pay for the import

    try:
        blocks = crl_blocks(crl.read_bytes())
    except OSError as e:
        raise TLSSetupError(f"trust.crl: cannot read {crl}: {e.strerror or e}") from None
    except ValueError as e:
        raise TLSSetupError(f"trust.crl: {crl}: {e}") from None
    for block in blocks:
        why = add_crl_der(block.der, ctx)
        if why:
            raise TLSSetupError(f"trust.crl: {crl}: {block.where}: {why}")
    return blocks


def _load_error(e: ssl.SSLError, certificate: Path, key: Path, passphrase: bytes | None) -> str:
    reason = (getattr(e, "reason", None) or "").upper()
    if reason == "KEY_VALUES_MISMATCH":
        return f"identity.key: {key} does not match identity.certificate {certificate}"
    try:
        encrypted = b"ENCRYPTED" in key.read_bytes()
    except OSError:
        encrypted = False
    if encrypted and passphrase is None:
        return f"identity.key: {key} is encrypted: set identity.key_passphrase_file"
    if encrypted:
        return f"identity.key_passphrase_file: cannot decrypt {key} (wrong passphrase?)"
    if _mismatch(certificate, key, passphrase):
        return f"identity.key: {key} does not match identity.certificate {certificate}"
    return f"identity: cannot load {certificate} / {key}: {_ssl_msg(e)}"


def _mismatch(certificate: Path, key: Path, passphrase: bytes | None) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as ser

    try:
        cert = x509.load_pem_x509_certificates(certificate.read_bytes())[0]
        priv = ser.load_pem_private_key(key.read_bytes(), password=passphrase)
    except (OSError, ValueError, TypeError):
        return False
    spki = (ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*spki) != priv.public_key().public_bytes(*spki)


def _ssl_msg(e: Exception) -> str:
    reason = getattr(e, "reason", None)
    return (reason or str(e)).lower().replace("_", " ")
