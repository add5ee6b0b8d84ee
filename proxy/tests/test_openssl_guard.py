"""The OpenSSL hooks refuse a Python or OpenSSL whose layouts they do not know, before they read
any pointer: a clear TLSSetupError at start instead of a crash (tls/openssl.py)."""

import ssl

import pytest
from medtls.tls import TLSSetupError, openssl


class _NoPointers:
    """Stands in for ctypes in openssl.py: any pointer read or library load fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"ctypes.{name} used before the runtime was checked")


@pytest.fixture
def runtime(monkeypatch):
    """Set what openssl.py sees as (implementation, Python version, OpenSSL version)."""
    openssl._lib.cache_clear()

    def use(impl, version, openssl_version):
        monkeypatch.setattr(openssl, "_runtime", lambda: (impl, version, openssl_version))
        monkeypatch.setattr(openssl, "ctypes", _NoPointers())

    yield use
    monkeypatch.undo()
    openssl._lib.cache_clear()


def _all_hooks():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    return [
        openssl.self_test,
        lambda: openssl.set_tls13_suites(ctx, ["TLS_AES_128_GCM_SHA256"]),
        lambda: openssl.enable_dh_auto(ctx),
        lambda: openssl.configure_tickets(ctx, 3600),
        lambda: openssl.rotate_ticket_keys(ctx),
        lambda: openssl.build_own_chain(ctx, "cert.pem"),
        lambda: openssl.set_chain_store(ctx, "ca.pem"),
        lambda: openssl.add_crl_der(b"\x30\x00", ctx),
        lambda: openssl.issue_no_ticket(obj),
        lambda: openssl.renew_bios(obj, ssl.MemoryBIO(), ssl.MemoryBIO()),
        lambda: openssl.send_close_notify(obj),
    ]


@pytest.mark.parametrize(
    ("impl", "version", "ossl", "why"),
    [
        ("cpython", (3, 14, 0), (3, 0, 19), "_ssl struct layouts of CPython 3.11, 3.12, 3.13 only"),
        ("cpython", (3, 10, 13), (3, 0, 19), "CPython 3.11, 3.12, 3.13 only"),
        ("pypy", (3, 11, 7), (3, 0, 19), "CPython 3.11, 3.12, 3.13 only"),
        ("cpython", (3, 11, 7), (1, 1, 1), "written for OpenSSL 3.x"),
        ("cpython", (3, 12, 1), (4, 0, 0), "written for OpenSSL 3.x"),
    ],
)  # fmt: skip
def test_unknown_runtime_is_refused_before_any_pointer_is_read(runtime, impl, version, ossl, why):
    runtime(impl, version, ossl)
    name = "Python" if impl == "cpython" else f"Python ({impl})"
    v, o = ".".join(map(str, version)), ".".join(map(str, ossl))
    for hook in _all_hooks():
        with pytest.raises(TLSSetupError) as e:
            hook()
        assert str(e.value).startswith(
            f"this {name} {v} / OpenSSL {o} is not supported by medtls' OpenSSL hooks: "
        )
        assert why in str(e.value)


def test_a_free_threaded_object_header_is_refused(monkeypatch, runtime):
    runtime("cpython", (3, 13, 0), (3, 0, 19))
    monkeypatch.setattr(openssl, "_HEAD", 32)  # what PyObject_HEAD takes without the GIL
    with pytest.raises(TLSSetupError, match="object header is 16 bytes, not 32"):
        openssl.self_test()


def test_start_refuses_an_unknown_runtime(runtime):
    """`medtls run` and `check` call self_test() first: the error is the one printed."""
    from medtls.engine.daemon import self_test

    runtime("cpython", (3, 99, 0), (3, 5, 0))
    with pytest.raises(TLSSetupError, match=r"^this Python 3\.99\.0 / OpenSSL 3\.5\.0 is not"):
        self_test()


def test_this_runtime_is_known_and_the_layout_holds():
    assert openssl.unsupported_runtime() is None
    openssl.self_test()


def test_a_wrong_layout_is_caught_by_the_cross_check(monkeypatch):
    """After the version gate, a pointer at the wrong offset fails the options comparison."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    monkeypatch.setattr(openssl, "_ctx_raw", lambda ctx: 0)
    with pytest.raises(TLSSetupError, match="cannot reach the OpenSSL SSL_CTX"):
        openssl.set_tls13_suites(ctx, ["TLS_AES_128_GCM_SHA256"])
