"""Byte relay between a plain and a TLS (or plain) socket, driven by one event loop.

TLS runs over memory BIOs (`ssl.SSLObject`): one recv() feeds many records, one send() carries
many records, and the TLS object never touches the socket itself. Each direction has a bounded
plaintext buffer; a full buffer stops reading from the source (backpressure), and a TLS
destination only accepts plaintext once its previous ciphertext has been sent.

End of stream travels both ways: TCP FIN -> close_notify (+FIN) and close_notify (+FIN) -> FIN,
only after every buffered byte has been delivered. Errors abort both sides with RST; so does a TLS
stream that ends without close_notify (`Truncated`), which may have lost bytes.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl

from medtls.tls.openssl import renew_bios, send_close_notify

READ = select.EPOLLIN
WRITE = select.EPOLLOUT

# Ciphertext buffered from a TLS socket before it is decrypted; > 2 records so a record always
# completes even when the plaintext buffer is small.
TLS_INC_LIMIT = 65536


class RelayError(Exception):
    """A side failed mid-stream (reset, TLS error); `side` names which."""

    def __init__(self, side: str, detail: str, tls_error: ssl.SSLError | None = None):
        super().__init__(f"{side}: {detail}")
        self.side = side
        self.detail = detail
        self.tls_error = tls_error


class Truncated(RelayError):
    """The TLS peer's stream ended (TCP FIN) without close_notify: bytes may be missing."""


class Side:
    """One socket of a connection, optionally with a TLS layer over memory BIOs."""

    __slots__ = (
        "conn",
        "eof_in",
        "fd",
        "fin_after_flush",
        "handshake_bios",
        "inc",
        "mask",
        "name",
        "only_close",
        "out",
        "raw_eof",
        "shut_out",
        "sock",
        "sslobj",
        "tls",
        "wblocked",
        "wbuf",
        "woff",
    )  # fmt: skip

    def __init__(self, conn, name: str, sock: socket.socket):
        self.conn = conn
        self.name = name
        self.sock = sock
        self.fd = sock.fileno()
        self.tls: ssl.SSLObject | None = None
        self.sslobj = None  # tls._sslobj: the C object, called directly on the hot path
        self.inc: ssl.MemoryBIO | None = None
        self.out: ssl.MemoryBIO | None = None
        self.wbuf: bytes = b""  # ciphertext not yet sent
        self.woff = 0
        self.wblocked = False  # last send hit EAGAIN: wait for writability
        self.raw_eof = False  # TCP FIN received
        self.eof_in = False  # no more plaintext will come from this side
        self.shut_out = False  # end of stream sent to this side
        self.fin_after_flush = False
        self.only_close = False  # nothing but close_notify is queued
        self.mask = 0
        self.handshake_bios = False  # BIOs still sized for the handshake flight

    def start_tls(
        self,
        ctx: ssl.SSLContext,
        server: bool,
        sni: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(
            self.inc, self.out, server_side=server, server_hostname=sni, session=session
        )
        self.sslobj = self.tls._sslobj
        self.handshake_bios = True

    def renew_bios(self) -> None:
        """Swap empty BIOs for new ones: gives back what a handshake or a burst made them keep."""
        self.inc, self.out = renew_bios(self.tls, self.inc, self.out)

    def recv_tls(self, scratch: memoryview) -> None:
        """Move ciphertext from the socket into the incoming BIO."""
        try:
            n = self.sock.recv_into(scratch)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            raise RelayError(self.name, _oserr(e)) from None
        if n:
            self.inc.write(scratch[:n])
        else:
            self.raw_eof = True
            self.inc.write_eof()

    def flush(self) -> None:
        """Send queued ciphertext; returns when sent or the socket is full."""
        while True:
            if self.woff >= len(self.wbuf):
                if self.out is None or not self.out.pending:
                    self.wbuf = b""
                    self.woff = 0
                    if self.fin_after_flush:
                        self.fin_after_flush = False
                        _shutdown_wr(self)
                    return
                self.wbuf = self.out.read()
                self.woff = 0
            try:
                n = self.sock.send(memoryview(self.wbuf)[self.woff :])
            except (BlockingIOError, InterruptedError):
                self.wblocked = True
                return
            except OSError as e:
                if self.only_close:
                    # Peer already gone; every data byte was delivered before close_notify.
                    self.wbuf, self.woff, self.fin_after_flush = b"", 0, False
                    if self.out.pending:
                        self.out.read()
                    return
                raise RelayError(self.name, _oserr(e)) from None
            self.woff += n

    @property
    def pending_out(self) -> bool:
        return self.woff < len(self.wbuf) or bool(self.out is not None and self.out.pending)


def _shutdown_wr(side: Side) -> None:
    # Only called once every byte for this side was sent: a peer that already closed
    # (ENOTCONN/EPIPE/ECONNRESET) has lost nothing.
    with contextlib.suppress(OSError):
        side.sock.shutdown(socket.SHUT_WR)


def _oserr(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


class BufferPool:
    """Plaintext buffers of one size, shared by the connections of one process.

    A pipe holds a buffer only while bytes wait in it, so idle connections cost no buffer memory
    and a large buffer_size only costs memory for connections that are actually backlogged.
    """

    __slots__ = ("free", "keep", "seen", "size", "takes")

    def __init__(self, size: int, keep_bytes: int = 4 << 20):
        self.size = size
        self.keep = max(2, keep_bytes // size)
        self.free: list[memoryview] = []
        self.takes = 0
        self.seen = 0

    def take(self) -> memoryview:
        self.takes += 1
        return self.free.pop() if self.free else memoryview(bytearray(self.size))

    def trim_if_idle(self) -> bool:
        """Drop the free buffers when none was taken since the last call (True if any dropped).

        Called every few seconds: a burst keeps its buffers for the next one, a quiet process
        gives the memory back."""
        idle = self.takes == self.seen
        self.seen = self.takes
        if idle and self.free:
            self.free.clear()
            return True
        return False

    def give(self, mv: memoryview) -> None:
        if len(self.free) < self.keep:
            self.free.append(mv)


class Pipe:
    """One direction: plaintext bytes from `src` waiting to be delivered to `dst`."""

    __slots__ = ("count", "dst", "end", "mv", "pool", "size", "src", "start")

    def __init__(self, src: Side, dst: Side, pool: BufferPool):
        self.src = src
        self.dst = dst
        self.pool = pool
        self.size = pool.size
        self.mv: memoryview | None = None  # taken from the pool while bytes are in flight
        self.start = 0
        self.end = 0
        self.count = 0  # bytes delivered to dst

    @property
    def done(self) -> bool:
        return self.src.eof_in and self.start == self.end and self.dst.shut_out

    def release(self) -> None:
        """Give the buffer back (pending bytes, if any, are dropped: only for a closed pipe)."""
        if self.mv is not None:
            self.pool.give(self.mv)
            self.mv = None
        self.start = self.end = 0


def recv_plain(side: Side, pipe: Pipe) -> None:
    if pipe.end >= pipe.size or side.eof_in:
        return
    if pipe.mv is None:
        pipe.mv = pipe.pool.take()
    try:
        n = side.sock.recv_into(pipe.mv[pipe.end :])
    except (BlockingIOError, InterruptedError):
        n = -1
    except OSError as e:
        raise RelayError(side.name, _oserr(e)) from None
    if n > 0:
        pipe.end += n
        return
    if n == 0:
        side.raw_eof = side.eof_in = True
    if pipe.end == 0:
        pipe.release()


def _tls_read(src: Side, pipe: Pipe) -> bool:
    got = False
    tls = src.sslobj
    inc = src.inc
    if pipe.mv is None:
        pipe.mv = pipe.pool.take()
    mv = pipe.mv
    # Skipping read() when no input can complete a record avoids a raised SSLWantReadError.
    while pipe.end < pipe.size and (inc.pending or src.raw_eof or tls.pending()):
        try:
            n = tls.read(pipe.size - pipe.end, mv[pipe.end :])
        except ssl.SSLWantReadError:
            return got
        except ssl.SSLZeroReturnError:
            src.eof_in = True
            return True
        except ssl.SSLEOFError:
            # FIN without close_notify, even mid-record: the end of this stream is not
            # authenticated, so it must not reach the plain side as a clean end.
            raise Truncated(src.name, "TLS stream ended without close_notify") from None
        except ssl.SSLError as e:
            raise RelayError(src.name, f"TLS error: {e.reason or e}", e) from None
        if not n:
            src.eof_in = True
            return True
        pipe.end += n
        got = True
    return got


def tls_read_first(src: Side, pipe: Pipe) -> None:
    """What pump() does first for a TLS source: decrypt what its BIO holds into `pipe`. The
    daemon calls it (outside the hot path) while it copies a protocol route's first message."""
    if (
        src.tls is not None
        and not src.eof_in
        and pipe.end < pipe.size
        and (src.inc.pending or src.raw_eof or src.sslobj.pending())
    ):
        _tls_read(src, pipe)


def forward(src: Side, p: Pipe, scratch: memoryview) -> bool:
    """The steady-state read event, in one pass: read what `src` has and deliver it to `p.dst`.

    The caller only uses it while `p` is empty and `p.dst` can take bytes. True means every byte
    read was delivered and nothing waits anywhere (so the connection's interest is unchanged);
    False leaves the rest (end of stream, a full socket, records OpenSSL wants to send, input
    left in the BIO) to pump(), which carries on from whatever state this left.
    """
    dst = p.dst
    if src.sslobj is not None:
        src.recv_tls(scratch)
        if src.raw_eof:
            return False
        if not src.inc.pending:
            return True
        _tls_read(src, p)
        if src.eof_in:
            return False
    else:
        recv_plain(src, p)
        if src.eof_in:
            return False
    end = p.end
    if not end:
        p.release()
    elif dst.sslobj is None:
        try:
            n = dst.sock.send(p.mv[:end])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            raise RelayError(dst.name, _oserr(e)) from None
        p.count += n
        if n < end:
            p.start = n
            return False
        p.end = 0
        p.release()
    else:
        try:
            dst.sslobj.write(p.mv[:end])
        except ssl.SSLError as e:
            raise RelayError(dst.name, f"TLS error: {e.reason or e}", e) from None
        p.count += end
        p.end = 0
        p.release()
        dst.flush()
        if dst.pending_out:
            return False
    # More input than one buffer, or records OpenSSL wants to send back (a KeyUpdate): pump().
    return src.sslobj is None or not (src.inc.pending or src.out.pending or src.sslobj.pending())


def pump(pipes: tuple[Pipe, Pipe]) -> None:
    """Move as many bytes as possible without blocking, in both directions."""
    progress = True
    while progress:
        progress = False
        for p in pipes:
            src, dst = p.src, p.dst
            if (
                src.tls is not None
                and not src.eof_in
                and p.end < p.size
                and (src.inc.pending or src.raw_eof or src.sslobj.pending())
            ):
                progress |= _tls_read(src, p)
            if p.end > p.start:
                if dst.tls is not None:
                    # Backpressure: no new records while ciphertext handed to send() waits.
                    # Records still in the BIO (a client's last handshake flight) leave in the
                    # same send() as these.
                    if dst.woff >= len(dst.wbuf):
                        try:
                            dst.sslobj.write(p.mv[p.start : p.end])
                        except ssl.SSLError as e:
                            raise RelayError(dst.name, f"TLS error: {e.reason or e}", e) from None
                        p.count += p.end - p.start
                        p.start = p.end = 0
                        progress = True
                elif not dst.wblocked:
                    try:
                        n = dst.sock.send(p.mv[p.start : p.end])
                    except (BlockingIOError, InterruptedError):
                        dst.wblocked = True
                        n = 0
                    except OSError as e:
                        raise RelayError(dst.name, _oserr(e)) from None
                    if n:
                        p.count += n
                        p.start += n
                        if p.start == p.end:
                            p.start = p.end = 0
                        progress = True
            if dst.tls is not None and not dst.wblocked and dst.pending_out:
                dst.flush()
                if not dst.pending_out and p.end > p.start:
                    progress = True
            if src.eof_in and p.start == p.end and not dst.shut_out:
                dst.shut_out = True
                progress = True
                if dst.tls is not None:
                    dst.only_close = not dst.pending_out
                    send_close_notify(dst.tls)
                    dst.fin_after_flush = True
                    if not dst.wblocked:
                        dst.flush()
                else:
                    _shutdown_wr(dst)
    for p in pipes:
        if p.mv is not None and p.start == p.end:
            p.release()


def interest(side: Side, outpipe: Pipe) -> int:
    """Selector events `side` needs now."""
    mask = WRITE if side.wblocked else 0
    if side.tls is not None:
        if not side.raw_eof and not side.eof_in and side.inc.pending < TLS_INC_LIMIT:
            mask |= READ
    elif not side.eof_in and outpipe.end < outpipe.size:
        mask |= READ
    return mask


def finished(pipes: tuple[Pipe, Pipe]) -> bool:
    a, b = pipes
    return (
        a.src.eof_in
        and b.src.eof_in
        and a.done
        and b.done
        and not a.src.pending_out
        and not a.dst.pending_out
    )
