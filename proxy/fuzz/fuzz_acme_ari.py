"""Fuzz the RFC 9773 renewalInfo parser (the ACME CA's answer) and the tls-alpn-01 responder's
ClientHello ALPN reader (a validation connection's first bytes).

parse_renewal_info answers (start, end) with start < end or RenewalInfoError;
client_hello_alpn answers a tuple of bytes, None (incomplete) or NotTls. Anything else is a
crash."""

import sys

import atheris

with atheris.instrument_imports():
    from medtls.core import tlshello
    from medtls.enroll import acme, challenges


def TestOneInput(data: bytes) -> None:
    try:
        start, end = acme.parse_renewal_info(data)
    except acme.RenewalInfoError:
        pass
    else:
        if not start < end:
            raise AssertionError("window does not end after its start")
    try:
        names = challenges.client_hello_alpn(data)
    except tlshello.NotTls:
        return
    if names is not None and not all(isinstance(n, bytes) and n for n in names):
        raise AssertionError(f"unexpected ALPN answer {names!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
