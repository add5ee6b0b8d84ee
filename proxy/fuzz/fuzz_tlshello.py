"""Fuzz the ClientHello/ServerHello reader the daemon runs on a peer's first bytes.

hello_extensions(stream) answers None (incomplete), (type, extension set) or raises NotTls;
offers_psk(stream) answers a bool. Anything else (another exception, a wrong type) is a crash;
so is looking at more records than MAX_HELLO_RECORDS (its cost must not grow with the input)."""

import sys

import atheris

with atheris.instrument_imports():
    from medtls.core import tlshello


def TestOneInput(data: bytes) -> None:
    try:
        got = tlshello.hello_extensions(data)
    except tlshello.NotTls:
        got = None
    if got is not None:
        kind, exts = got
        if kind not in (tlshello.CLIENT_HELLO, tlshello.SERVER_HELLO) or not isinstance(exts, set):
            raise AssertionError(f"unexpected answer {got!r}")
    if tlshello.offers_psk(data) not in (True, False):
        raise AssertionError("offers_psk did not answer a bool")
    try:
        records = tlshello.handshake_records(data)
    except tlshello.NotTls:
        return
    if len(records) > tlshello.MAX_HELLO_RECORDS:
        raise AssertionError("looked at more records than MAX_HELLO_RECORDS")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
