"""Security checks run on every contender before it is measured: the numbers only count if the
pair really does TLS 1.3 with the chosen suite, requires a client certificate and verifies the
server, and resumes sessions exactly when the configuration says so. Each check raises
CheckFailed with a one-line reason."""

import contextlib
import os
import re
import selectors
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from medtls.core.tlshello import resumed

from . import load, procs
from .certs import SERVER_NAME, Pki
from .loopback import LoopbackServer
from .tap import HelloTap

ALL_SUITES = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"


class CheckFailed(RuntimeError):
    pass


def negotiated(tls_port: int, pki: Pki) -> tuple[str, str]:
    """(protocol, suite) the server side picks when the client offers every TLS 1.3 suite,
    AES-128 first: a server not pinned to the configured suite would pick another one."""
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{tls_port}", "-brief",
         "-cert", str(pki.client_crt), "-key", str(pki.client_key), "-CAfile", str(pki.ca),
         "-verify_return_error", "-verify_hostname", SERVER_NAME, "-ciphersuites", ALL_SUITES],
        input=b"", capture_output=True, timeout=15,
    )  # fmt: skip
    text = out.stderr.decode(errors="replace") + out.stdout.decode(errors="replace")
    proto = re.search(r"Protocol version: (\S+)", text)
    suite = re.search(r"Ciphersuite: (\S+)", text)
    if not proto or not suite:
        line = text.strip().splitlines()[-1:] or ["no output"]
        raise CheckFailed(f"TLS handshake with 127.0.0.1:{tls_port} failed: {line[0]}")
    return proto.group(1), suite.group(1)


def rejects_anonymous_client(tls_port: int, pki: Pki) -> None:
    """A client without a certificate must not get data through the server side."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"Eanonymous")
                data = s.recv(64)
        except (OSError, ssl.SSLError):
            return
    if data:
        raise CheckFailed(f"server side on port {tls_port} relayed data for a client without cert")


class _RogueServer(LoopbackServer):
    """TLS server with a certificate from an untrusted CA; records any application data."""

    def __init__(self, pki: Pki):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.rogue_crt, pki.rogue_key)
        self.received = b""
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as s:
                self.received += s.recv(64)
        except (OSError, ssl.SSLError):
            conn.close()


@contextlib.contextmanager
def _client_side(contender, setup, listen: int, upstream: int, tag: str):
    """A fresh client side of `contender` on `listen`, relaying to `upstream`, stopped after."""
    side = contender.start_client(setup, listen, upstream, tag=tag)
    try:
        yield side
    finally:
        side.stop()


def refuses_rogue_server(contender, setup, listen: int) -> None:
    """The client side must not send data to a server whose certificate it cannot verify."""
    rogue = _RogueServer(setup.pki)
    try:
        with (
            _client_side(contender, setup, listen, rogue.port, "rogue-client"),
            socket.create_connection(("127.0.0.1", listen), timeout=5) as s,
        ):
            try:
                s.sendall(b"Eto-the-rogue")
                s.recv(64)
            except OSError:
                pass
    finally:
        rogue.close()
    if rogue.received:
        raise CheckFailed(f"client side sent data to an unverified server: {rogue.received!r}")


_PING = b"medtls-bench-resumption-probe"


def session_status(text: str) -> str | None:
    """New or Reused, from `openssl s_client` output or an `s_server -www` page (both print
    "New, TLSv1.3, Cipher is ..." / "Reused, TLSv1.3, ..."); None if there is no such line or
    the protocol is not TLS 1.3."""
    m = re.search(r"^(New|Reused), TLSv1\.3,", text, re.M)
    return m.group(1) if m else None


def _s_client_echo(tls_port: int, pki: Pki, sess_args: list[str], timeout: float = 10) -> str:
    """One s_client connection through the server side to the sink's echo: it waits for the
    echo, so the TLS 1.3 ticket (sent right after the handshake) has been read before exit."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{tls_port}", "-cert",
           str(pki.client_crt), "-key", str(pki.client_key), "-CAfile", str(pki.ca),
           "-verify_return_error", "-verify_hostname", SERVER_NAME, *sess_args]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = b""
    try:
        proc.stdin.write(b"E" + _PING + b"\n")
        proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while _PING not in out and time.monotonic() < deadline:
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    break
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
        out += proc.communicate(timeout=timeout)[0]  # closes stdin: s_client ends the session
    except (OSError, ValueError, subprocess.TimeoutExpired):
        proc.kill()
        out += proc.communicate()[0] or b""
    return out.decode(errors="replace")


def server_side_resumption(tls_port: int, pki: Pki) -> str:
    """Reused if the server side resumes a session it issued a ticket for, else New."""
    with tempfile.TemporaryDirectory(prefix="bench-sess-") as d:
        sess = Path(d) / "session.pem"
        first = _s_client_echo(tls_port, pki, ["-sess_out", str(sess)])
        if session_status(first) is None or _PING not in first.encode():
            raise CheckFailed(f"probe of 127.0.0.1:{tls_port} failed: {_last_line(first)}")
        if not sess.exists() or not sess.stat().st_size:
            return "New"  # no ticket arrived: nothing to resume with
        second = _s_client_echo(tls_port, pki, ["-sess_in", str(sess)])
    status = session_status(second)
    if status is None or _PING not in second.encode():
        raise CheckFailed(f"resumption probe of 127.0.0.1:{tls_port} failed: {_last_line(second)}")
    return status


def client_side_resumption(contender, setup, listen: int, conns: int = 3) -> list[str]:
    """New/Reused for each of `conns` connections through a fresh client side to
    `openssl s_server -www`, which issues tickets and reports on its page whether the handshake
    resumed. Several, because haproxy keeps a session per thread: its second connection may run
    on a thread that has none yet."""
    pki = setup.pki
    port = procs.free_port()
    log = setup.workdir / f"s_server-{contender.name}{setup.suffix}.log"
    server = procs.spawn(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(pki.server_crt),
         "-key", str(pki.server_key), "-CAfile", str(pki.ca), "-Verify", "1",
         "-verify_return_error", "-tls1_3", "-www"],
        log,
    )  # fmt: skip
    try:
        procs.wait_port(port, server, log)
        with _client_side(contender, setup, listen, port, "probe-client"):
            pages = [_http_get(listen) for _ in range(conns)]
    finally:
        procs.stop(server)
    statuses = [session_status(p) for p in pages]
    if None in statuses:
        bad = pages[statuses.index(None)]
        raise CheckFailed(f"client side to s_server: no TLS 1.3 status in {_last_line(bad)!r}")
    if statuses[0] != "New":
        raise CheckFailed("client side resumed on its first connection to a fresh server")
    return statuses


def pair_resumption(contender, setup, tls_port: int, listen: int, conns: int = 3) -> list[str]:
    """New/Reused for each connection between a fresh client side and the running server side
    (echo connections through both), read from the TLS hellos between them: the pair itself
    resumes, not just each side with openssl. May list more than `conns` connections: some
    client sides connect upstream for the readiness probe too."""
    tap = HelloTap(tls_port)
    try:
        with _client_side(contender, setup, listen, tap.port, "tap-client"):
            for _ in range(conns):
                load.echo_check(listen)
    finally:
        tap.close()
    if tap.errors:
        raise CheckFailed(f"client side to server side: {tap.errors[0]}")
    seen = [resumed(h["client"], h["server"]) for h in tap.hellos if h["client"] and h["server"]]
    if len(seen) < conns:
        raise CheckFailed(f"tap saw {len(seen)} TLS handshakes for {conns} echo connections")
    return seen


def _http_get(port: int, tries: int = 2) -> str:
    """The s_server page through the client side. s_server closes right after the page, and a
    relay may pass that on as a reset that can cut the page: then ask again."""
    for attempt in range(tries):
        data = b""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                while chunk := s.recv(65536):
                    data += chunk
        except ConnectionResetError:
            if session_status(data.decode(errors="replace")) is None and attempt + 1 < tries:
                continue
        break
    return data.decode(errors="replace")


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no output"


def judge_resumption(resume: bool, found: dict[str, str]) -> list[str]:
    """Problems with the probes' results (found: server_side, client_side, pair -> New or
    Reused) for a configuration with resumption on or off. With it on, the server side must
    resume (whether the client side and the pair did is reported, see the table notes); with it
    off, nothing may, or the full-handshake metrics would measure resumptions."""
    if resume:
        ok = found["server_side"] == "Reused"
        return [] if ok else ["server side did not resume a session (New)"]
    return [f"{what.replace('_', ' ')} resumed a session with resumption off"
            for what, got in found.items() if got != "New"]  # fmt: skip


def run_all(contender, setup, tls_port: int, spare_port: int, resumption: bool = True) -> dict:
    """Every check of one configuration. `resumption`: also probe session resumption (where
    connection setup is measured). The resumption configuration skips the rogue-server check:
    it differs from the full-handshake one only in its session lines (bench/tests), and the
    pair probe replaces it there (the pair must resume, so it still talks to the real server)."""
    proto, suite = negotiated(tls_port, setup.pki)
    if proto != "TLSv1.3" or suite != setup.suite:
        raise CheckFailed(f"negotiated {proto} {suite}, expected TLSv1.3 {setup.suite}")
    rejects_anonymous_client(tls_port, setup.pki)
    out: dict = {"protocol": proto, "suite": suite, "client_cert_required": True}
    if not setup.resume:
        refuses_rogue_server(contender, setup, spare_port)
        out["server_verified"] = True
    if not resumption and not setup.resume:
        return out
    found = {"server_side": server_side_resumption(tls_port, setup.pki)}
    client_conns = client_side_resumption(contender, setup, spare_port)
    found["client_side"] = "Reused" if "Reused" in client_conns else "New"
    detail = {"client_side_connections": ",".join(client_conns)}
    if setup.resume:
        # with resumption off the server side issues no tickets: nothing for the pair to show
        pair_conns = pair_resumption(contender, setup, tls_port, spare_port)
        found["pair"] = "Reused" if "Reused" in pair_conns else "New"
        detail["pair_connections"] = ",".join(pair_conns)
    problems = judge_resumption(setup.resume, found)
    if problems:
        raise CheckFailed("; ".join(problems))
    out["resumption"] = {**found, **detail}
    return out
