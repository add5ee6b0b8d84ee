"""Fuzz the http-01 responder's request reader (a CA validation connection's bytes).

request_head answers None (incomplete), the head, or BadRequest only past MAX_HTTP_REQUEST;
http01_status answers 200 only with the expected key authorization, else 400/404. Anything
else (another exception, another status) is a crash."""

import sys

import atheris

with atheris.instrument_imports():
    from medtls.enroll import challenges

TOKENS = {"tok-EN_1": "tok-EN_1.thumbprint"}


def TestOneInput(data: bytes) -> None:
    try:
        head = challenges.request_head(data)
    except challenges.BadRequest:
        if len(data) < challenges.MAX_HTTP_REQUEST:
            raise AssertionError("BadRequest before the size bound") from None
        return
    if head is None:
        return
    status, body = challenges.http01_status(head, TOKENS)
    if status not in (200, 400, 404) or (status == 200) != (body == b"tok-EN_1.thumbprint"):
        raise AssertionError(f"unexpected answer {status} {body!r}")
    challenges.http_response(status, body)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
