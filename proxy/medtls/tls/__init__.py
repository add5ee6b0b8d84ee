"""The TLS wing: contexts from profiles and material (context.py, material.py); every ctypes
call into OpenSSL, and every read of a CPython object's layout, in openssl.py."""


class TLSSetupError(Exception):
    """TLS material or profile could not be applied (message is user-facing)."""
