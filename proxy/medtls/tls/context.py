"""Build ssl.SSLContext objects from profiles; set TLS 1.3 suites per context.

Python's ssl module has no call for SSL_CTX_set_ciphersuites, and a process-wide OpenSSL config
file cannot differ per peer. We call SSL_CTX_set_ciphersuites on the context's own SSL_CTX through
ctypes, using the libssl that the `_ssl` extension is linked against, and then *verify* the result
through `SSLContext.get_ciphers()` (which lists TLS 1.3 suites too), refusing to run otherwise.
"""

from __future__ import annotations

import ctypes
import os
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


class TLSSetupError(Exception):
    """TLS material or profile could not be applied (message is user-facing)."""


@cache
def _libssl() -> ctypes.CDLL | None:
    with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
        for line in f:
            if "libssl.so" in line:
                lib = ctypes.CDLL(line.split()[-1])
                lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
                lib.SSL_CTX_set_ciphersuites.restype = ctypes.c_int
                lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
                lib.SSL_CTX_get_options.restype = ctypes.c_uint64
                lib.SSL_CTX_ctrl.argtypes = [
                    ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p,
                ]  # fmt: skip
                lib.SSL_CTX_ctrl.restype = ctypes.c_long
                lib.SSL_CTX_set_timeout.argtypes = [ctypes.c_void_p, ctypes.c_long]
                lib.SSL_CTX_set_timeout.restype = ctypes.c_long
                lib.SSL_get_SSL_CTX.argtypes = [ctypes.c_void_p]
                lib.SSL_get_SSL_CTX.restype = ctypes.c_void_p
                lib.SSL_set_num_tickets.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
                lib.SSL_set_num_tickets.restype = ctypes.c_int
                lib.SSL_shutdown.argtypes = [ctypes.c_void_p]
                lib.SSL_shutdown.restype = ctypes.c_int
                lib.ERR_clear_error.argtypes = []
                lib.ERR_clear_error.restype = None
                for name in ("SSL_get_rbio", "SSL_get_wbio"):
                    getattr(lib, name).argtypes = [ctypes.c_void_p]
                    getattr(lib, name).restype = ctypes.c_void_p
                for name in ("SSL_set0_rbio", "SSL_set0_wbio"):
                    getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p]
                    getattr(lib, name).restype = None
                # libssl links libcrypto: BIO_up_ref resolves through it.
                lib.BIO_up_ref.argtypes = [ctypes.c_void_p]
                lib.BIO_up_ref.restype = ctypes.c_int
                # trust.crl: each CRL is parsed from DER and added to the store on its own.
                lib.SSL_CTX_get_cert_store.argtypes = [ctypes.c_void_p]
                lib.SSL_CTX_get_cert_store.restype = ctypes.c_void_p
                lib.d2i_X509_CRL.argtypes = [
                    ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_long,
                ]  # fmt: skip
                lib.d2i_X509_CRL.restype = ctypes.c_void_p
                lib.X509_STORE_add_crl.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
                lib.X509_STORE_add_crl.restype = ctypes.c_int
                lib.X509_CRL_free.argtypes = [ctypes.c_void_p]
                lib.X509_CRL_free.restype = None
                return lib
    return None


_WORD = ctypes.sizeof(ctypes.c_ssize_t)


def _ssl_ctx_raw(ctx: ssl.SSLContext) -> int:
    # PySSLContext starts with PyObject_HEAD followed by `SSL_CTX *ctx`.
    return ctypes.c_void_p.from_address(id(ctx) + _WORD * 2).value or 0


def _ssl_ctx_ptr(ctx: ssl.SSLContext) -> int:
    ptr = _ssl_ctx_raw(ctx)
    lib = _libssl()
    if not ptr or lib is None or lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        raise TLSSetupError("cannot reach the OpenSSL SSL_CTX of this Python build")
    return ptr


_SSL_CTRL_SET_DH_AUTO = 118
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


def set_tls13_suites(ctx: ssl.SSLContext, suites: list[str]) -> None:
    lib = _libssl()
    if lib is None:
        raise TLSSetupError("libssl not found in process; cannot set TLS 1.3 suites")
    ptr = _ssl_ctx_ptr(ctx)
    if lib.SSL_CTX_set_ciphersuites(ptr, ":".join(suites).encode()) != 1:
        raise TLSSetupError(f"OpenSSL rejected TLS 1.3 suites {':'.join(suites)}")
    got = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"]
    if got != suites:
        raise TLSSetupError(f"TLS 1.3 suites not applied: wanted {suites}, have {got}")


def _enable_dh_auto(ctx: ssl.SSLContext) -> None:
    lib = _libssl()
    if lib is not None:
        lib.SSL_CTX_ctrl(_ssl_ctx_ptr(ctx), _SSL_CTRL_SET_DH_AUTO, 1, None)


_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
_TICKET_KEYS_LEN = 80  # key name 16, HMAC key 32, AES key 32 (OpenSSL 3)


def configure_tickets(ctx: ssl.SSLContext, lifetime: int) -> None:
    """Server side: stateless session tickets valid for `lifetime` seconds, or none (0).

    No server-side session cache either way (no session-ID resumption): a ticket carries the
    session, so memory stays bounded by open connections, not by peers seen in the last hour.
    A resumed peer is still checked against the ACL and its certificate's expiry by the daemon.
    """
    lib = _libssl()
    if lib is None:
        raise TLSSetupError("libssl not found in process; cannot configure session tickets")
    ptr = _ssl_ctx_ptr(ctx)
    lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_SESS_CACHE_MODE, 0, None)
    if lifetime:
        ctx.num_tickets = 1
        lib.SSL_CTX_set_timeout(ptr, lifetime)
    else:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0


def rotate_ticket_keys(ctx: ssl.SSLContext) -> None:
    """New random ticket keys: tickets issued before no longer resume (a full handshake instead)."""
    lib = _libssl()
    if lib is None:
        raise TLSSetupError("libssl not found in process; cannot rotate session ticket keys")
    keys = ctypes.create_string_buffer(os.urandom(_TICKET_KEYS_LEN), _TICKET_KEYS_LEN)
    if lib.SSL_CTX_ctrl(_ssl_ctx_ptr(ctx), _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, _TICKET_KEYS_LEN,
                        ctypes.addressof(keys)) != 1:  # fmt: skip
        raise TLSSetupError("OpenSSL refused new session ticket keys")


def issue_no_ticket(sslobj: ssl.SSLObject) -> None:
    """This connection's handshake sends no new ticket (the client resumes with one it has).

    A renewed ticket costs OpenSSL ≈ 0.6 ms on each side (the session, peer certificate included,
    is serialised and parsed again): more than resumption saves (docs/performance.md item 62)."""
    _libssl().SSL_set_num_tickets(_ssl_ptr(sslobj), 0)


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
    _enable_dh_auto(ctx)


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
    return ctx


def load_crls(ctx: ssl.SSLContext, crl: Path, check: str = "leaf") -> None:
    """Check every peer certificate (`chain`: and its CAs) against the CRLs in `crl`.

    OpenSSL then refuses a revoked certificate, and also one whose issuer has no CRL in the
    file or only an expired one: a revocation list that cannot be trusted fails closed.
    """
    read_crls(crl, store=_libssl_or_fail().SSL_CTX_get_cert_store(_ssl_ctx_ptr(ctx)))
    ctx.verify_flags |= (
        ssl.VERIFY_CRL_CHECK_CHAIN if check == "chain" else ssl.VERIFY_CRL_CHECK_LEAF
    )


def read_crls(crl: Path, store: int | None = None) -> list:
    """The CRLs of `trust.crl` (crlparse.CrlBlock), block by block, each one parsed by OpenSSL
    as a whole CRL and, with `store` (an X509_STORE *), added to it; TLSSetupError naming the
    file and the block otherwise. `check`, start and reload all read the file through here.

    The file never goes to an OpenSSL file loader: those also take certificates, and a
    certificate in this file would become a trust anchor.
    """
    from medtls.core.crlparse import crl_blocks  # only configurations with a CRL pay for the import

    try:
        blocks = crl_blocks(crl.read_bytes())
    except OSError as e:
        raise TLSSetupError(f"trust.crl: cannot read {crl}: {e.strerror or e}") from None
    except ValueError as e:
        raise TLSSetupError(f"trust.crl: {crl}: {e}") from None
    lib = _libssl_or_fail()
    for block in blocks:
        buf = ctypes.create_string_buffer(block.der, len(block.der))
        cursor = ctypes.c_void_p(ctypes.addressof(buf))
        parsed = lib.d2i_X509_CRL(None, ctypes.byref(cursor), len(block.der))
        try:
            if not parsed:
                why = "is not a CRL OpenSSL can read"
            elif cursor.value - ctypes.addressof(buf) != len(block.der):
                why = "has bytes after the CRL"
            elif store is not None and lib.X509_STORE_add_crl(store, parsed) != 1:
                why = "was refused by the OpenSSL certificate store"
            else:
                continue
            lib.ERR_clear_error()
            raise TLSSetupError(f"trust.crl: {crl}: {block.where}: {why}")
        finally:
            if parsed:
                lib.X509_CRL_free(parsed)  # the store holds its own reference
    return blocks


def _libssl_or_fail() -> ctypes.CDLL:
    lib = _libssl()
    if lib is None:
        raise TLSSetupError("libssl not found in process; cannot load trust.crl")
    return lib


_SSL_CTRL_SET_CHAIN_CERT_STORE = 107


def set_chain_store(ctx: ssl.SSLContext, bundle: Path) -> None:
    """Build the chain we send from `bundle` (identity.ca) instead of the peers' trust store.

    Python's ssl has no call for SSL_CTX_set1_chain_cert_store; the store holds `bundle` only,
    so a CA that issued our own certificate never becomes a trust anchor for peers."""
    lib = _libssl()
    if lib is None:
        raise TLSSetupError("libssl not found in process; cannot use identity.ca")
    lib.X509_STORE_new.restype = ctypes.c_void_p
    lib.X509_STORE_new.argtypes = []
    lib.X509_STORE_free.argtypes = [ctypes.c_void_p]
    lib.X509_STORE_free.restype = None
    lib.X509_STORE_load_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.X509_STORE_load_file.restype = ctypes.c_int
    store = lib.X509_STORE_new()
    if not store:
        raise TLSSetupError("identity.ca: OpenSSL could not allocate a certificate store")
    try:
        if lib.X509_STORE_load_file(store, os.fsencode(bundle)) != 1:
            lib.ERR_clear_error()
            raise TLSSetupError(f"identity.ca: {bundle}: cannot load CA bundle")
        if lib.SSL_CTX_ctrl(_ssl_ctx_ptr(ctx), _SSL_CTRL_SET_CHAIN_CERT_STORE, 1, store) != 1:
            lib.ERR_clear_error()
            raise TLSSetupError(f"identity.ca: {bundle}: OpenSSL refused the chain store")
    finally:
        lib.X509_STORE_free(store)  # the context holds its own reference (set1)


_SSL_CTRL_GET_CHAIN_CERTS = 115
_SSL_CTRL_BUILD_CERT_CHAIN = 105
# NO_ROOT: a self-signed trust anchor is not sent (the peer must hold it anyway, RFC 8446
# 4.4.2); IGNORE_ERROR | CLEAR_ERROR: a chain that does not reach trust.ca is sent as far as it
# goes, exactly as OpenSSL's per-handshake chain building does.
_BUILD_CHAIN_FLAGS = 0x2 | 0x8 | 0x10


def build_own_chain(ctx: ssl.SSLContext, certificate: Path) -> None:
    """Build the chain we send once, now, instead of in every handshake.

    With only a leaf in identity.certificate, OpenSSL builds the chain to send from the CA
    store with a full X509_verify_cert() at every handshake, and sends the root as well, which
    the peer then parses and decodes again: together ~27 % of a handshake pair's CPU
    (docs/performance.md, item 44). A certificate file that carries its own chain is left as is.
    """
    lib = _libssl()
    if lib is None:
        raise TLSSetupError("libssl not found in process; cannot build the certificate chain")
    ptr = _ssl_ctx_ptr(ctx)
    chain = ctypes.c_void_p()
    lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_GET_CHAIN_CERTS, 0, ctypes.addressof(chain))
    if chain.value:
        return
    if lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_BUILD_CERT_CHAIN, _BUILD_CHAIN_FLAGS, None) <= 0:
        lib.ERR_clear_error()
        raise TLSSetupError(
            f"identity.certificate: {certificate}: OpenSSL refuses the chain built from trust.ca"
            " (a CA certificate below the profile's security level?)"
        )


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


def _ssl_ptr(sslobj: ssl.SSLObject) -> int:
    # _ssl._SSLSocket starts with PyObject_HEAD, `PyObject *Socket`, `SSL *ssl`.
    inner = sslobj._sslobj
    ptr = ctypes.c_void_p.from_address(id(inner) + _WORD * 3).value
    lib = _libssl()
    # Two pointers read independently must agree. The context's options are not compared
    # here (as in `_ssl_ctx_ptr`): that builds an enum per call, twice per connection, and
    # `self_test()` has proved the layout at start.
    if not ptr or lib is None or lib.SSL_get_SSL_CTX(ptr) != _ssl_ctx_raw(sslobj.context):
        raise TLSSetupError("cannot reach the OpenSSL SSL object of this Python build")
    return ptr


def _bio_ptr(bio: ssl.MemoryBIO) -> int:
    # PySSLMemoryBIO starts with PyObject_HEAD followed by `BIO *bio`.
    return ctypes.c_void_p.from_address(id(bio) + _WORD * 2).value or 0


def renew_bios(
    sslobj: ssl.SSLObject, inc: ssl.MemoryBIO, out: ssl.MemoryBIO
) -> tuple[ssl.MemoryBIO, ssl.MemoryBIO]:
    """Give the SSL object fresh, empty memory BIOs; returns the pair now in use.

    A memory BIO keeps the capacity of the most it ever held (the whole handshake flight, or
    a burst) until it is freed; swapping an empty BIO for a new one gives that memory back.
    A BIO that still holds bytes is kept. Python's ssl has no call for SSL_set0_[rw]bio.
    """
    lib = _libssl()
    ssl_ptr = _ssl_ptr(sslobj)
    new = []
    for old, pending, get, set0 in (
        (inc, inc.pending or inc.eof, lib.SSL_get_rbio, lib.SSL_set0_rbio),
        (out, out.pending, lib.SSL_get_wbio, lib.SSL_set0_wbio),
    ):
        ptr = _bio_ptr(old)
        if pending or not ptr or get(ssl_ptr) != ptr:
            new.append(old)
            continue
        bio = ssl.MemoryBIO()
        lib.BIO_up_ref(_bio_ptr(bio))  # the SSL object's reference; `bio` keeps its own
        set0(ssl_ptr, _bio_ptr(bio))  # drops the SSL object's reference to `old`
        new.append(bio)
    return new[0], new[1]


def send_close_notify(sslobj: ssl.SSLObject) -> int:
    """Queue a close_notify in the outgoing BIO without trying to read the peer's one.

    `SSLObject.unwrap()` calls SSL_shutdown twice and the second call reads from the incoming
    BIO, which must not swallow application data still in flight the other way (half-close).
    """
    lib = _libssl()
    rc = lib.SSL_shutdown(_ssl_ptr(sslobj))
    if rc < 0:
        # Leave no stale entry in OpenSSL's per-thread error queue: the next ssl call on any
        # connection would report it as its own error.
        lib.ERR_clear_error()
    return rc


def self_test() -> None:
    """Fail early (at start/check) if the ctypes hooks do not fit this Python/OpenSSL."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    set_tls13_suites(ctx, ["TLS_AES_128_GCM_SHA256"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out)
    ptr = _ssl_ptr(obj)
    lib = _libssl()
    if lib.SSL_get_rbio(ptr) != _bio_ptr(inc) or lib.SSL_get_wbio(ptr) != _bio_ptr(out):
        raise TLSSetupError("cannot reach the OpenSSL BIO objects of this Python build")
