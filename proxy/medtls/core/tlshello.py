"""Which extensions a TLS ClientHello or ServerHello carries, from the first bytes of a TCP
stream (pure functions, no I/O). In TLS 1.3 both hellos travel in the clear, and a session is
resumed exactly when the ServerHello carries pre_shared_key (RFC 8446 4.2.11): the client offered
a ticket and the server accepted it. Used by the daemon (does a ClientHello offer a ticket?) and by
the benchmark's resumption probes."""

HANDSHAKE = 22
CLIENT_HELLO = 1
SERVER_HELLO = 2
PRE_SHARED_KEY = 41


# A hello split into more records than this, or longer than this, is not read to its end
# (None: "incomplete"; the daemon then treats it as offering no ticket). Real hellos take one
# record, at most a few; without a bound, a ClientHello in 1-byte records cost ~24 ms of loop
# time (issue 16). The work per call is bounded by these, not by the length of the stream.
MAX_HELLO_RECORDS = 64
MAX_HELLO_BYTES = 65536


class NotTls(ValueError):
    pass


def handshake_records(stream: bytes) -> list[bytes]:
    """The payloads of the leading handshake records: up to the end of the first handshake
    message, at most MAX_HELLO_RECORDS records and MAX_HELLO_BYTES bytes."""
    parts: list[bytes] = []
    pos, have, need = 0, 0, MAX_HELLO_BYTES
    while pos + 5 <= len(stream) and len(parts) < MAX_HELLO_RECORDS:
        ctype, length = stream[pos], int.from_bytes(stream[pos + 3 : pos + 5], "big")
        if ctype != HANDSHAKE:
            if not parts:
                raise NotTls(f"first record has content type {ctype}, not handshake")
            break
        part = stream[pos + 5 : pos + 5 + length]
        parts.append(part)
        before, have = have, have + len(part)
        if before < 4 <= have:  # the message header is complete: its length says where it ends
            head = b"".join(parts)[:4]
            need = min(need, 4 + int.from_bytes(head[1:4], "big"))
        if pos + 5 + length > len(stream) or have >= need:
            break
        pos += 5 + length
    return parts


def _handshake_bytes(stream: bytes) -> bytes:
    """The handshake-protocol payload of the leading handshake records (one linear join)."""
    return b"".join(handshake_records(stream))[:MAX_HELLO_BYTES]


def _extensions(body: bytes, pos: int) -> set[int]:
    end = min(len(body), pos + 2 + int.from_bytes(body[pos : pos + 2], "big"))
    pos += 2
    found = set()
    while pos + 4 <= end:
        found.add(int.from_bytes(body[pos : pos + 2], "big"))
        pos += 4 + int.from_bytes(body[pos + 2 : pos + 4], "big")
    return found


def hello_extensions(stream: bytes) -> tuple[int, set[int]] | None:
    """(handshake type, extension types) of the hello at the start of `stream`, or None while
    the hello is not complete yet. NotTls if the stream does not start with a hello, or with a
    malformed one; never another exception, whatever `stream` holds."""
    hs = _handshake_bytes(stream)
    if len(hs) < 4:
        return None
    msg_type, length = hs[0], int.from_bytes(hs[1:4], "big")
    if msg_type not in (CLIENT_HELLO, SERVER_HELLO):
        raise NotTls(f"first handshake message has type {msg_type}, not a hello")
    if len(hs) < 4 + length:
        return None
    try:
        return msg_type, _hello_body_extensions(msg_type, hs[4 : 4 + length])
    except IndexError:
        raise NotTls("malformed hello: a field runs past the end of the message") from None


def _hello_body_extensions(msg_type: int, body: bytes) -> set[int]:
    pos = 2 + 32  # legacy_version, random
    pos += 1 + body[pos]  # legacy_session_id
    if msg_type == CLIENT_HELLO:
        pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher_suites
        pos += 1 + body[pos]  # legacy_compression_methods
    else:
        pos += 2 + 1  # cipher_suite, legacy_compression_method
    if pos + 2 > len(body):
        return set()
    return _extensions(body, pos)


def resumed(client_hello: set[int], server_hello: set[int]) -> str:
    """New or Reused, as `openssl s_client` says it, from the two hellos' extension types."""
    return "Reused" if PRE_SHARED_KEY in client_hello and PRE_SHARED_KEY in server_hello else "New"


def offers_psk(stream: bytes) -> bool:
    """True if `stream` starts with a complete ClientHello that offers a session ticket
    (pre_shared_key); anything else (incomplete, malformed, not TLS) is False."""
    try:
        hello = hello_extensions(stream)
    except NotTls:
        return False
    return hello is not None and hello[0] == CLIENT_HELLO and PRE_SHARED_KEY in hello[1]
