"""Every ctypes call of medtls into OpenSSL, and every read of a CPython `_ssl` object's layout.

Python's ssl module has no call for what medtls needs per context and per connection (TLS 1.3
suites, session tickets, the chain we send, CRLs one by one, swapping memory BIOs, a one-way
close_notify). We call the libssl that the `_ssl` extension runs on, on the OpenSSL objects
behind Python's own: their pointers are read at fixed offsets of `_ssl.c`'s structs.

Those offsets hold only for the CPython builds listed in KNOWN_PYTHONS, so nothing here reads a
pointer before `unsupported_runtime()` has passed (`_lib()` runs it once, and every function
calls `_lib()` first); `self_test()` then proves the layout at start through values OpenSSL and
Python both report (a context's options, an SSL object's context, its BIOs).
"""

from __future__ import annotations

import _ssl
import ctypes
import os
import ssl
import sys
from functools import cache
from pathlib import Path

from medtls.tls import TLSSetupError

# CPython versions whose Modules/_ssl.c structs start as below (self_test() passed on 3.11.7,
# 3.12.1 and 3.13.0; later fields differ between them and are never read):
#   PySSLContext   { PyObject_HEAD; SSL_CTX *ctx; ... }
#   PySSLSocket    { PyObject_HEAD; PyObject *Socket; SSL *ssl; ... }
#   PySSLMemoryBIO { PyObject_HEAD; BIO *bio; ... }
KNOWN_PYTHONS = ((3, 11), (3, 12), (3, 13))
# The SSL_CTRL_* numbers and the 80-byte ticket key block below are OpenSSL 3's.
KNOWN_OPENSSL_MAJOR = 3

_WORD = ctypes.sizeof(ctypes.c_void_p)
_HEAD = 2 * _WORD  # PyObject_HEAD with the GIL, no trace refs: ob_refcnt, ob_type
_CTX_AT = _HEAD  # PySSLContext.ctx
_SSL_AT = _HEAD + _WORD  # PySSLSocket.ssl
_BIO_AT = _HEAD  # PySSLMemoryBIO.bio


def _runtime() -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    """Implementation, version of this Python, and version of the OpenSSL its ssl runs on."""
    major, minor, fix, patch, _ = ssl.OPENSSL_VERSION_INFO  # 3.0.19 is (3, 0, 0, 19, 0)
    openssl = (major, minor, patch) if major >= 3 else (major, minor, fix)
    return sys.implementation.name, tuple(sys.version_info[:3]), openssl


def unsupported_runtime() -> str | None:
    """Why the hooks must not touch this process's objects, or None. Reads no pointer."""
    impl, version, openssl = _runtime()
    problems = []
    if impl != "cpython" or tuple(version[:2]) not in KNOWN_PYTHONS:
        known = ", ".join(f"{a}.{b}" for a, b in KNOWN_PYTHONS)
        problems.append(f"they know the _ssl struct layouts of CPython {known} only")
    if openssl[0] != KNOWN_OPENSSL_MAJOR:
        problems.append(f"they are written for OpenSSL {KNOWN_OPENSSL_MAJOR}.x")
    if object.__basicsize__ != _HEAD:
        problems.append(
            f"its object header is {object.__basicsize__} bytes, not {_HEAD}"
            " (a free-threaded or trace-refs build)"
        )
    fields = ((_ssl._SSLContext, _CTX_AT), (_ssl._SSLSocket, _SSL_AT), (_ssl.MemoryBIO, _BIO_AT))
    for cls, at in fields:
        if cls.__basicsize__ < at + _WORD:
            problems.append(f"its {cls.__name__} ({cls.__basicsize__} bytes) ends before byte {at}")
    if not problems:
        return None
    py = ".".join(map(str, version))
    name = "Python" if impl == "cpython" else f"Python ({impl})"
    ossl = ".".join(map(str, openssl))
    return (
        f"this {name} {py} / OpenSSL {ossl} is not supported by medtls' OpenSSL hooks: "
        + "; ".join(problems)
    )


def _libssl_path() -> str | None:
    # The libssl the `_ssl` extension is linked against; ctypes.util.find_library would spawn
    # `ldconfig -p` and could name another one.
    with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
        for line in f:
            if "libssl.so" in line:
                return line.split()[-1]
    return None


_P = ctypes.c_void_p
_PROTOTYPES = {
    # libssl links libcrypto: its functions resolve through the same handle.
    "OpenSSL_version_num": ([], ctypes.c_ulong),
    "SSL_CTX_set_ciphersuites": ([_P, ctypes.c_char_p], ctypes.c_int),
    "SSL_CTX_get_options": ([_P], ctypes.c_uint64),
    "SSL_CTX_ctrl": ([_P, ctypes.c_int, ctypes.c_long, _P], ctypes.c_long),
    "SSL_CTX_set_timeout": ([_P, ctypes.c_long], ctypes.c_long),
    "SSL_CTX_get_cert_store": ([_P], _P),
    "SSL_get_SSL_CTX": ([_P], _P),
    "SSL_set_num_tickets": ([_P, ctypes.c_size_t], ctypes.c_int),
    "SSL_shutdown": ([_P], ctypes.c_int),
    "SSL_get_rbio": ([_P], _P),
    "SSL_get_wbio": ([_P], _P),
    "SSL_set0_rbio": ([_P, _P], None),
    "SSL_set0_wbio": ([_P, _P], None),
    "BIO_up_ref": ([_P], ctypes.c_int),
    "ERR_clear_error": ([], None),
    "d2i_X509_CRL": ([_P, ctypes.POINTER(_P), ctypes.c_long], _P),
    "X509_CRL_free": ([_P], None),
    "X509_STORE_new": ([], _P),
    "X509_STORE_free": ([_P], None),
    "X509_STORE_load_file": ([_P, ctypes.c_char_p], ctypes.c_int),
    "X509_STORE_add_crl": ([_P, _P], ctypes.c_int),
    # the client-certificate judge (inbound): verify callback and the ticket extension hook
    "SSL_CTX_get_verify_mode": ([_P], ctypes.c_int),
    "SSL_CTX_set_verify": ([_P, ctypes.c_int, _P], None),
    "SSL_CTX_add_custom_ext": (
        [_P, ctypes.c_uint, ctypes.c_uint, _P, _P, _P, _P, _P], ctypes.c_int),
    "SSL_get_ex_data_X509_STORE_CTX_idx": ([], ctypes.c_int),
    "X509_STORE_CTX_get_ex_data": ([_P, ctypes.c_int], _P),
    "X509_STORE_CTX_get_error_depth": ([_P], ctypes.c_int),
    "X509_STORE_CTX_get_current_cert": ([_P], _P),
    "X509_STORE_CTX_set_error": ([_P, ctypes.c_int], None),
    "i2d_X509": ([_P, ctypes.POINTER(_P)], ctypes.c_int),
    "SSL_version": ([_P], ctypes.c_int),
}  # fmt: skip


@cache
def _lib() -> ctypes.CDLL:
    """The process's libssl with the prototypes used here; TLSSetupError on a runtime the
    hooks do not know (checked before any pointer is read)."""
    why = unsupported_runtime()
    if why:
        raise TLSSetupError(why)
    path = _libssl_path()
    if path is None:
        raise TLSSetupError(
            "libssl not found in process: medtls' OpenSSL hooks need the libssl of the ssl module"
        )
    lib = ctypes.CDLL(path)
    for name, (argtypes, restype) in _PROTOTYPES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            why = f"{path} has no {name}: medtls' OpenSSL hooks cannot use it"
            raise TLSSetupError(why) from None
        fn.argtypes, fn.restype = argtypes, restype
    if lib.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
        raise TLSSetupError(
            f"{path} is not the OpenSSL the ssl module runs on ({ssl.OPENSSL_VERSION}):"
            " medtls' OpenSSL hooks cannot use it"
        )
    return lib


# --- OpenSSL objects behind Python's (each caller has run _lib() first) ---


def _ctx_raw(ctx: ssl.SSLContext) -> int:
    return ctypes.c_void_p.from_address(id(ctx) + _CTX_AT).value or 0


def _ctx_ptr(ctx: ssl.SSLContext) -> int:
    lib = _lib()
    ptr = _ctx_raw(ctx)
    if not ptr or lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        raise TLSSetupError("cannot reach the OpenSSL SSL_CTX of this Python build")
    return ptr


def _ssl_ptr(sslobj: ssl.SSLObject) -> int:
    lib = _lib()
    ptr = ctypes.c_void_p.from_address(id(sslobj._sslobj) + _SSL_AT).value
    # Two pointers read independently must agree. The context's options are not compared
    # here (as in `_ctx_ptr`): that builds an enum per call, twice per connection, and
    # `self_test()` has proved the layout at start.
    if not ptr or lib.SSL_get_SSL_CTX(ptr) != _ctx_raw(sslobj.context):
        raise TLSSetupError("cannot reach the OpenSSL SSL object of this Python build")
    return ptr


def _bio_ptr(bio: ssl.MemoryBIO) -> int:
    return ctypes.c_void_p.from_address(id(bio) + _BIO_AT).value or 0


def self_test() -> None:
    """Fail early (at start/check) if the hooks do not fit this Python/OpenSSL."""
    lib = _lib()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    set_tls13_suites(ctx, ["TLS_AES_128_GCM_SHA256"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out)
    ptr = _ssl_ptr(obj)
    if lib.SSL_get_rbio(ptr) != _bio_ptr(inc) or lib.SSL_get_wbio(ptr) != _bio_ptr(out):
        raise TLSSetupError("cannot reach the OpenSSL BIO objects of this Python build")


# --- contexts (start and reload) ---

_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
_SSL_CTRL_BUILD_CERT_CHAIN = 105
_SSL_CTRL_SET_CHAIN_CERT_STORE = 107
_SSL_CTRL_GET_CHAIN_CERTS = 115
_SSL_CTRL_SET_DH_AUTO = 118
_TICKET_KEYS_LEN = 80  # key name 16, HMAC key 32, AES key 32 (OpenSSL 3)
# NO_ROOT: a self-signed trust anchor is not sent (the peer must hold it anyway, RFC 8446
# 4.4.2); IGNORE_ERROR | CLEAR_ERROR: a chain that does not reach trust.ca is sent as far as it
# goes, exactly as OpenSSL's per-handshake chain building does.
_BUILD_CHAIN_FLAGS = 0x2 | 0x8 | 0x10


def set_tls13_suites(ctx: ssl.SSLContext, suites: list[str]) -> None:
    """SSL_CTX_set_ciphersuites, then verified through `get_ciphers()` (it lists TLS 1.3 too).

    A process-wide OpenSSL config file cannot differ per peer; this can."""
    lib = _lib()
    if lib.SSL_CTX_set_ciphersuites(_ctx_ptr(ctx), ":".join(suites).encode()) != 1:
        raise TLSSetupError(f"OpenSSL rejected TLS 1.3 suites {':'.join(suites)}")
    got = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"]
    if got != suites:
        raise TLSSetupError(f"TLS 1.3 suites not applied: wanted {suites}, have {got}")


def enable_dh_auto(ctx: ssl.SSLContext) -> None:
    """Finite-field DHE parameters sized to the certificate (SSL_CTX_set_dh_auto)."""
    _lib().SSL_CTX_ctrl(_ctx_ptr(ctx), _SSL_CTRL_SET_DH_AUTO, 1, None)


def configure_tickets(ctx: ssl.SSLContext, lifetime: int) -> None:
    """Server side: stateless session tickets valid for `lifetime` seconds, or none (0).

    No server-side session cache either way (no session-ID resumption): a ticket carries the
    session, so memory stays bounded by open connections, not by peers seen in the last hour.
    A resumed peer is still checked against the ACL and its certificate's expiry by the daemon.
    """
    lib = _lib()
    ptr = _ctx_ptr(ctx)
    lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_SESS_CACHE_MODE, 0, None)
    if lifetime:
        ctx.num_tickets = 1
        lib.SSL_CTX_set_timeout(ptr, lifetime)
    else:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0


def rotate_ticket_keys(ctx: ssl.SSLContext) -> None:
    """New random ticket keys: tickets issued before no longer resume (a full handshake instead)."""
    lib = _lib()
    keys = ctypes.create_string_buffer(os.urandom(_TICKET_KEYS_LEN), _TICKET_KEYS_LEN)
    if lib.SSL_CTX_ctrl(_ctx_ptr(ctx), _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, _TICKET_KEYS_LEN,
                        ctypes.addressof(keys)) != 1:  # fmt: skip
        raise TLSSetupError("OpenSSL refused new session ticket keys")


def set_chain_store(ctx: ssl.SSLContext, bundle: Path) -> None:
    """Build the chain we send from `bundle` (identity.ca) instead of the peers' trust store.

    Python's ssl has no call for SSL_CTX_set1_chain_cert_store; the store holds `bundle` only,
    so a CA that issued our own certificate never becomes a trust anchor for peers."""
    lib = _lib()
    store = lib.X509_STORE_new()
    if not store:
        raise TLSSetupError("identity.ca: OpenSSL could not allocate a certificate store")
    try:
        if lib.X509_STORE_load_file(store, os.fsencode(bundle)) != 1:
            lib.ERR_clear_error()
            raise TLSSetupError(f"identity.ca: {bundle}: cannot load CA bundle")
        if lib.SSL_CTX_ctrl(_ctx_ptr(ctx), _SSL_CTRL_SET_CHAIN_CERT_STORE, 1, store) != 1:
            lib.ERR_clear_error()
            raise TLSSetupError(f"identity.ca: {bundle}: OpenSSL refused the chain store")
    finally:
        lib.X509_STORE_free(store)  # the context holds its own reference (set1)


def build_own_chain(ctx: ssl.SSLContext, certificate: Path) -> None:
    """Build the chain we send once, now, instead of in every handshake.

    With only a leaf in identity.certificate, OpenSSL builds the chain to send from the CA
    store with a full X509_verify_cert() at every handshake, and sends the root as well, which
    the peer then parses and decodes again: together ~27 % of a handshake pair's CPU
    (docs/performance.md, item 44). A certificate file that carries its own chain is left as is.
    """
    lib = _lib()
    ptr = _ctx_ptr(ctx)
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


def add_crl_der(der: bytes, ctx: ssl.SSLContext | None = None) -> str | None:
    """Parse `der` as one whole CRL and, with `ctx`, add it to the context's trust store.

    Returns None, or why not (for the caller's message). The DER never goes to an OpenSSL file
    loader: those also take certificates, which would become trust anchors."""
    lib = _lib()
    store = lib.SSL_CTX_get_cert_store(_ctx_ptr(ctx)) if ctx is not None else None
    buf = ctypes.create_string_buffer(der, len(der))
    cursor = ctypes.c_void_p(ctypes.addressof(buf))
    parsed = lib.d2i_X509_CRL(None, ctypes.byref(cursor), len(der))
    try:
        if not parsed:
            why = "is not a CRL OpenSSL can read"
        elif cursor.value - ctypes.addressof(buf) != len(der):
            why = "has bytes after the CRL"
        elif store is not None and lib.X509_STORE_add_crl(store, parsed) != 1:
            why = "was refused by the OpenSSL certificate store"
        else:
            return None
        lib.ERR_clear_error()
        return why
    finally:
        if parsed:
            lib.X509_CRL_free(parsed)  # the store holds its own reference


# --- connections (called per connection: no work beyond the calls themselves) ---


def issue_no_ticket(sslobj: ssl.SSLObject) -> None:
    """This connection's handshake sends no new ticket (the client resumes with one it has).

    A renewed ticket costs OpenSSL ≈ 0.6 ms on each side (the session, peer certificate included,
    is serialised and parsed again): more than resumption saves (docs/performance.md item 62)."""
    _lib().SSL_set_num_tickets(_ssl_ptr(sslobj), 0)


def renew_bios(
    sslobj: ssl.SSLObject, inc: ssl.MemoryBIO, out: ssl.MemoryBIO
) -> tuple[ssl.MemoryBIO, ssl.MemoryBIO]:
    """Give the SSL object fresh, empty memory BIOs; returns the pair now in use.

    A memory BIO keeps the capacity of the most it ever held (the whole handshake flight, or
    a burst) until it is freed; swapping an empty BIO for a new one gives that memory back.
    A BIO that still holds bytes is kept. Python's ssl has no call for SSL_set0_[rw]bio.
    """
    lib = _lib()
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
    lib = _lib()
    rc = lib.SSL_shutdown(_ssl_ptr(sslobj))
    if rc < 0:
        # Leave no stale entry in OpenSSL's per-thread error queue: the next ssl call on any
        # connection would report it as its own error.
        lib.ERR_clear_error()
    return rc


# --- the client-certificate judge (inbound; docs/security.md "Which alert a refused peer hears")
#
# OpenSSL sends the alert of a refused client certificate itself, chosen from the verify
# error (ssl_x509err2alert, ssl/statem/statem_lib.c). Medtls' own verdicts (the port's allow:
# list, a certificate that is not a strict-DER peer identity) are made in the handshake, by a
# verify callback on the leaf, so the refused client hears a specific alert, not a bare close:
#   bad_certificate          X509_V_ERR_CERT_REJECTED (28), TLS 1.2 and 1.3
#   access_denied            no X509_V_ERR maps to it (X509_V_ERR_APPLICATION_VERIFICATION
#                            gives handshake_failure), so:
#     TLS 1.3: the leaf is let through and the NewSessionTicket that follows the client's
#              Finished is made to fail in a custom extension's add callback, whose alert is ours
#              (SSL_CTX_add_custom_ext, context SSL_EXT_TLS1_3_NEW_SESSION_TICKET); the ticket
#              never leaves (the alert replaces it), and this one connection is made to issue one
#     TLS 1.2: the leaf is refused with APPLICATION_VERIFICATION; the server's flight before
#              is plaintext, so the alert record OpenSSL queued is plaintext too:
#              `access_denied_alert()` rewrites its description byte before it is sent.
# The callbacks never raise into C (any exception fails the handshake: internal_error) and do
# one dict lookup for a connection without a judge.

X509_V_ERR_UNSPECIFIED = 1
X509_V_ERR_CERT_REJECTED = 28
X509_V_ERR_APPLICATION_VERIFICATION = 50
ALERT_ACCESS_DENIED = 49
_TLS1_3_VERSION = 0x0304
_SSL_EXT_TLS1_3_NEW_SESSION_TICKET = 0x2000
_SSL_EXT_TLS_ONLY = 0x0001
# An extension type no one sends (never on the wire: the callback adds nothing or fails).
_JUDGE_EXT_TYPE = 0xFA17
_TLS12_HANDSHAKE_FAILURE = b"\x15\x03\x03\x00\x02\x02\x28"

ACCESS_DENIED = "access_denied"
BAD_CERTIFICATE = "bad_certificate"

_VerifyCb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_AddCb = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint,
    ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p,
    ctypes.c_size_t, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p,
)  # fmt: skip

# SSL* -> judge(der) -> None (allowed) | ACCESS_DENIED | BAD_CERTIFICATE; loop thread only.
_judges: dict[int, object] = {}
# SSL* of a TLS 1.3 connection to refuse with access_denied at its NewSessionTicket.
_deny_at_ticket: set[int] = set()


def _on_verify(ok: int, store: int) -> int:
    try:
        if not ok:
            return 0  # OpenSSL's own verdict (unknown_ca, certificate_expired, ...) stands
        lib = _lib()
        if lib.X509_STORE_CTX_get_error_depth(store) != 0:
            return 1
        ssl_ptr = lib.X509_STORE_CTX_get_ex_data(store, _ssl_index())
        judge = _judges.get(ssl_ptr)
        if judge is None:
            return 1
        cert = lib.X509_STORE_CTX_get_current_cert(store)
        n = lib.i2d_X509(cert, None)
        if n <= 0:
            lib.X509_STORE_CTX_set_error(store, X509_V_ERR_UNSPECIFIED)
            return 0
        buf = ctypes.create_string_buffer(n)
        cursor = ctypes.c_void_p(ctypes.addressof(buf))
        lib.i2d_X509(cert, ctypes.byref(cursor))
        verdict = judge(buf.raw)
        if verdict is None:
            return 1
        if verdict == ACCESS_DENIED:
            if lib.SSL_version(ssl_ptr) == _TLS1_3_VERSION:
                _deny_at_ticket.add(ssl_ptr)
                lib.SSL_set_num_tickets(ssl_ptr, 1)
                return 1
            lib.X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION)
            return 0
        lib.X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED)
        return 0
    except BaseException:  # never into C: fail this handshake (certificate_unknown)
        return 0


def _on_ticket_ext(ssl_ptr, _type, _context, _out, _outlen, _x, _idx, al, _arg) -> int:
    try:
        if ssl_ptr in _deny_at_ticket:
            _deny_at_ticket.discard(ssl_ptr)
            al[0] = ALERT_ACCESS_DENIED
            return -1  # OpenSSL: SSLfatal(al): the alert goes instead of the ticket
        return 0  # add nothing
    except BaseException:
        return -1  # `al` keeps OpenSSL's internal_error


_VERIFY_CB = _VerifyCb(_on_verify)
_ADD_CB = _AddCb(_on_ticket_ext)


@cache
def _ssl_index() -> int:
    return _lib().SSL_get_ex_data_X509_STORE_CTX_idx()


def install_client_judge(ctx: ssl.SSLContext) -> None:
    """Server context: run `judge_client`'s judges in the handshake (see above). Python's ssl
    keeps a context's verify callback when `verify_mode` is set again (and per connection)."""
    lib = _lib()
    ptr = _ctx_ptr(ctx)
    _ssl_index()
    lib.SSL_CTX_set_verify(ptr, lib.SSL_CTX_get_verify_mode(ptr), _VERIFY_CB)
    context = _SSL_EXT_TLS1_3_NEW_SESSION_TICKET | _SSL_EXT_TLS_ONLY
    if lib.SSL_CTX_add_custom_ext(ptr, _JUDGE_EXT_TYPE, context, _ADD_CB, None, None, None,
                                  None) != 1:  # fmt: skip
        lib.ERR_clear_error()
        raise TLSSetupError("OpenSSL refused medtls' access_denied hook (custom extension)")


def judge_client(sslobj: ssl.SSLObject, judge) -> int:
    """Let `judge(der)` decide on this connection's client certificate in the handshake;
    returns the key for `forget_client`, which must follow (at the latest when it closes)."""
    ptr = _ssl_ptr(sslobj)
    _judges[ptr] = judge
    return ptr


def forget_client(key: int) -> None:
    _judges.pop(key, None)
    _deny_at_ticket.discard(key)


def access_denied_alert(queued: bytes) -> bytes:
    """TLS 1.2: the plaintext handshake_failure alert OpenSSL queued for a client refused with
    APPLICATION_VERIFICATION, as access_denied; anything else unchanged."""
    if queued.endswith(_TLS12_HANDSHAKE_FAILURE):
        return queued[:-1] + bytes([ALERT_ACCESS_DENIED])
    return queued
