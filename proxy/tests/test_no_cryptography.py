"""The serving process never loads `cryptography` (≈ 13 MiB RSS per process, ≈ 77 µs per handshake).

Identity checks that need more than the subject (SPKI pins, subject rules) run on both sides, a
reload re-reads every certificate, and then the `cryptography` extension must not be mapped into
either `medtls run` process. `medtls check` and the tests may use it.
"""

import hashlib
import signal
import socket
from pathlib import Path

from conftest import echo_once, free_port
from cryptography.hazmat.primitives import serialization


def _spki_sha256(cert) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def _mapped_cryptography(pid: int) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({line.split()[-1] for line in maps.splitlines() if "cryptography" in line})


def _echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        return echo_once(s, payload)


def test_serving_process_does_not_load_cryptography(pki, make_pair, echo_server):
    pair = make_pair(
        echo_server.port,
        verify={"cn": "box-b", "spki_sha256": _spki_sha256(pki.leaves["box-b"].cert)},
        allow=[
            {
                "subject": "CN=box-a,O=Test Hospital",
                "spki_sha256": _spki_sha256(pki.leaves["box-a"].cert),
            }
        ],
        a_over={"metrics": {"enabled": True, "listen": f"127.0.0.1:{free_port()}"}},
    )
    assert _echo(pair.a_port, b"hello") == b"hello"
    pair.b.signal(signal.SIGHUP)
    pair.b.wait_log("generation 2")
    assert _echo(pair.a_port, b"again") == b"again"
    pair.a.wait_log("result=ok")
    for m in (pair.a, pair.b):
        assert m.proc.poll() is None
        assert _mapped_cryptography(m.proc.pid) == [], m.log()
