"""The box's ACME client (medtls/enroll/acme.py, challenges.py) against Debian's pebble 2.4.0 on
loopback, with External Account Binding required and real validation; the client runs under
Debian's /usr/bin/python3 (python3-acme), as on the box. Parsers of outside input (the http-01
request, the ClientHello's ALPN list, the renewalInfo answer) also get property tests."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st
from medtls.core import tlshello
from medtls.enroll import acme, challenges
from pebble_util import EAB_HMAC, EAB_KID, PEBBLE, running_pebble

PROXY = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
DRIVER = Path(__file__).with_name("enroll_obtain_driver.py")

needs_pebble = pytest.mark.skipif(
    not (os.access(PEBBLE, os.X_OK) and os.access(SYSTEM_PYTHON, os.X_OK)),
    reason="needs Debian's pebble and /usr/bin/python3 with python3-acme",
)


# ------------------------------------------------------------------ helpers


def csr_for(ips=(), dns=()) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips] + [x509.DNSName(d) for d in dns]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def run_driver(peb, tmp_path, challenge_types, eab=(EAB_KID, EAB_HMAC), **extra):
    args = {
        "directory": peb.directory,
        "ca_file": str(peb.ca_file),
        "eab": list(eab) if eab else None,
        "account_key": str(tmp_path / "account.key"),
        "csr": csr_for(ips=["127.0.0.1"]).decode(),
        "challenges": challenge_types,
        "tls_port": peb.tls_port,
        "http_port": peb.http_port,
        "timeout": 60,
        **extra,
    }
    r = subprocess.run(
        [SYSTEM_PYTHON, str(DRIVER), json.dumps(args)],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROXY)},
    )  # fmt: skip
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout), r.stderr


@pytest.fixture(scope="module")
def pebble(tmp_path_factory):
    with running_pebble(tmp_path_factory.mktemp("pebble")) as peb:
        yield peb


# ------------------------------------------------------------------ (a) real validation


@needs_pebble
@pytest.mark.parametrize("challenge", ["tls-alpn-01", "http-01"])
def test_real_validation_issues_a_certificate_for_the_ip(pebble, tmp_path, challenge):
    rc, out, err = run_driver(pebble, tmp_path, [challenge])
    assert rc == 0, (out, err)
    assert out["answered"][challenge] >= 1  # the CA really connected to the responder
    chain = x509.load_pem_x509_certificates(out["chain"].encode())
    assert len(chain) >= 2  # leaf + pebble's intermediate: the full chain
    leaf = chain[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    ekus = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    # pebble 2.4.0 (Debian bookworm) issues both; newer pebble serverAuth only.
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= ekus
    key_file = tmp_path / "account.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


@needs_pebble
def test_preference_order_falls_back_when_the_responder_cannot_serve_the_first(pebble, tmp_path):
    rc, out, err = run_driver(pebble, tmp_path, ["tls-alpn-01", "http-01"], tls_port=None)
    assert rc == 0, (out, err)
    assert out["answered"] == {"tls-alpn-01": 0, "http-01": 1} or out["answered"]["http-01"]


@needs_pebble
def test_the_account_key_is_reused_for_a_second_order(pebble, tmp_path):
    assert run_driver(pebble, tmp_path, ["http-01"])[0] == 0
    before = (tmp_path / "account.key").read_bytes()
    assert run_driver(pebble, tmp_path, ["http-01"])[0] == 0
    assert (tmp_path / "account.key").read_bytes() == before


# ------------------------------------------------------------------ (b) EAB


@needs_pebble
@pytest.mark.parametrize(
    "eab, expect",
    [
        ((EAB_KID, base64.urlsafe_b64encode(b"x" * 32).decode().rstrip("=")), "acme account"),
        (("kid-unknown", EAB_HMAC), "acme account"),
        (None, "requires External Account Binding"),
    ],
    ids=["wrong-hmac", "unknown-kid", "missing"],
)
def test_without_the_right_eab_key_no_certificate(pebble, tmp_path, eab, expect):
    rc, out, _err = run_driver(pebble, tmp_path, ["http-01"], eab=eab)
    assert rc == 1
    assert "chain" not in out
    assert expect in out["error"]
    assert "\n" not in out["error"] and len(out["error"]) < 400
    assert out["answered"] == {"tls-alpn-01": 0, "http-01": 0}


@needs_pebble
def test_a_refused_validation_names_the_identifier_and_the_cas_problem(tmp_path):
    # The responder answers nothing the CA can accept: its http-01 port is not the one
    # pebble's validator dials, so validation fails and the CA's problem document is shown.
    with running_pebble(tmp_path / "peb") as peb:
        rc, out, _ = run_driver(peb, tmp_path, ["http-01"], http_port=free_loopback_port())
    assert rc == 1
    assert out["error"].startswith("acme validation: validation failed: 127.0.0.1 http-01: ")
    assert "(connection)" in out["error"] or "connection" in out["error"]


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_pebble
def test_ca_down_is_one_clear_line(tmp_path):
    port = free_loopback_port()
    args = {
        "directory": f"https://127.0.0.1:{port}/dir",
        "ca_file": None,
        "eab": None,
        "account_key": str(tmp_path / "account.key"),
        "csr": csr_for(ips=["127.0.0.1"]).decode(),
        "challenges": ["http-01"],
        "tls_port": None,
        "http_port": None,
        "timeout": 10,
    }
    r = subprocess.run(
        [SYSTEM_PYTHON, str(DRIVER), json.dumps(args)],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROXY)},
    )  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert json.loads(r.stdout)["error"].startswith("acme directory: cannot reach the CA")


# ------------------------------------------------------------------ ARI


def test_ari_cert_id_is_the_rfc_9773_example():
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    assert acme.ari_cert_id(aki, 0x0087654321) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_renewal_info_window_is_parsed():
    body = json.dumps(
        {
            "suggestedWindow": {"start": "2025-01-02T04:00:00Z", "end": "2025-01-03T04:00:00Z"},
            "explanationURL": "https://acme.example.com/docs/ari",
        }
    ).encode()
    start, end = acme.parse_renewal_info(body)
    assert end - start == 86400
    assert start == 1735790400.0
    frac = b'{"suggestedWindow": {"start": "2025-01-02T04:00:00.123456789+01:00", "end": "2025-01-03T04:00:00Z"}}'  # noqa: E501
    assert acme.parse_renewal_info(frac)[0] == pytest.approx(1735786800.123456)


@pytest.mark.parametrize(
    "body, problem",
    [
        (b"[]", "not a JSON object"),
        (b"{", "not JSON"),
        (b"\xff", "not JSON"),
        (b"{}", "suggestedWindow is missing"),
        (b'{"suggestedWindow": {"start": "2025-01-02", "end": "2025-01-03"}}', "RFC 3339"),
        (b'{"suggestedWindow": {"start": 1, "end": 2}}', "RFC 3339"),
        (
            b'{"suggestedWindow": {"start": "2025-01-02T04:00:00", "end": "2025-01-03T04:00:00"}}',
            "time zone",
        ),
        (
            b'{"suggestedWindow": {"start": "2025-01-03T04:00:00Z", '
            b'"end": "2025-01-02T04:00:00Z"}}',
            "not after its start",
        ),
        (b" " * 20000, "larger than"),
        (b"[" * 5000 + b"]" * 5000, "not JSON"),
        (b"[" * 3000 + b"]" * 3000, "not"),
    ],
)
def test_bad_renewal_info_is_refused_by_name(body, problem):
    with pytest.raises(acme.RenewalInfoError, match=problem):
        acme.parse_renewal_info(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["suggestedWindow", "start", "end", "x"]), kids, max_size=4),
    max_leaves=12,
).map(lambda v: json.dumps(v).encode()))  # fmt: skip
def test_renewal_info_parser_answers_a_window_or_a_named_error(body):
    try:
        start, end = acme.parse_renewal_info(body)
    except acme.RenewalInfoError as e:
        assert str(e)
        return
    assert start < end


@needs_pebble
def test_renewal_info_is_none_when_the_directory_has_no_renewal_info(pebble):
    import requests

    directory = requests.get(pebble.directory, verify=str(pebble.ca_file), timeout=10).json()
    if "renewalInfo" in directory:
        pytest.skip("this pebble offers renewalInfo")
    leaf = x509.load_pem_x509_certificate(pebble.ca_file.read_bytes())
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    assert acme.renewal_info(pebble.directory, str(pebble.ca_file), pem) is None


# ------------------------------------------------------------------ pure helpers


def test_challenge_choice_follows_the_preference_and_what_is_served():
    both = lambda t: True  # noqa: E731
    only_http = lambda t: t == "http-01"  # noqa: E731
    offered = ["http-01", "dns-01", "tls-alpn-01"]
    assert acme.choose_challenge(offered, ["tls-alpn-01", "http-01"], both) == "tls-alpn-01"
    assert acme.choose_challenge(offered, ["http-01", "tls-alpn-01"], both) == "http-01"
    assert acme.choose_challenge(offered, ["tls-alpn-01", "http-01"], only_http) == "http-01"
    assert acme.choose_challenge(["dns-01"], ["tls-alpn-01", "http-01"], both) is None
    assert acme.choose_challenge(offered, ["dns-01"], both) is None  # never what we cannot do


def test_problem_documents_become_one_bounded_line():
    line = acme.describe_problem("urn:ietf:params:acme:error:unauthorized", "no\nway\x1b[31m" * 99)
    assert line.endswith("(unauthorized)")
    assert "\n" not in line and "\x1b" not in line and len(line) < 450


# ------------------------------------------------------------------ http-01 reader


TOKEN = "tok_EN-123"
KEY_AUTH = TOKEN + ".thumbprint"


def test_http01_answers_only_get_of_an_expected_token():
    tokens = {TOKEN: KEY_AUTH}
    ok = f"GET /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\nHost: 1.2.3.4".encode()
    assert challenges.http01_status(ok, tokens) == (200, KEY_AUTH.encode())
    for bad in (
        f"POST /.well-known/acme-challenge/{TOKEN} HTTP/1.1",
        f"GET /.well-known/acme-challenge/{TOKEN}x HTTP/1.1",
        f"GET /.well-known/acme-challenge/{TOKEN}/../x HTTP/1.1",
        "GET / HTTP/1.1",
        "GET /.well-known/acme-challenge/ HTTP/1.1",
    ):
        assert challenges.http01_status(bad.encode(), tokens)[0] == 404, bad
    for bad in ("GET /x", "GET /x HTTP/2", "\x00\x01", "GET  /x HTTP/1.1", "G\x7fT /x HTTP/1.1"):
        assert challenges.http01_status(bad.encode(), tokens)[0] == 400, bad


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=challenges.MAX_HTTP_REQUEST + 100))
def test_http01_reader_never_fails_otherwise(data):
    try:
        head = challenges.request_head(data)
    except challenges.BadRequest:
        assert len(data) >= challenges.MAX_HTTP_REQUEST
        return
    if head is None:
        assert b"\r\n\r\n" not in data[: challenges.MAX_HTTP_REQUEST]
        return
    status, body = challenges.http01_status(head, {TOKEN: KEY_AUTH})
    assert status in (200, 400, 404)
    assert (status == 200) == (body == KEY_AUTH.encode())
    challenges.http_response(status, body)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "get"]),
    token=st.text(alphabet="abcXYZ019-_./%", min_size=0, max_size=20),
)
def test_http01_serves_the_key_authorization_only_for_the_exact_token(method, token):
    head = f"{method} {challenges.CHALLENGE_PATH}{token} HTTP/1.1\r\nHost: x".encode()
    status, _ = challenges.http01_status(head, {TOKEN: KEY_AUTH})
    assert (status == 200) == (method == "GET" and token == TOKEN)


# ------------------------------------------------------------------ ClientHello ALPN


def client_hello(alpn: list[str] | None, sni: str | None = "example") -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_alpn_list_of_real_client_hellos():
    assert challenges.client_hello_alpn(client_hello(["acme-tls/1"])) == (b"acme-tls/1",)
    assert challenges.client_hello_alpn(client_hello(["h2", "acme-tls/1"])) == (
        b"h2",
        b"acme-tls/1",
    )
    assert challenges.client_hello_alpn(client_hello(None)) == ()
    hello = client_hello(["acme-tls/1"])
    for cut in (0, 3, 5, 40, len(hello) - 1):
        assert challenges.client_hello_alpn(hello[:cut]) is None
    with pytest.raises(tlshello.NotTls):
        challenges.client_hello_alpn(b"GET / HTTP/1.1\r\n\r\n")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 600), st.binary(max_size=8))
def test_alpn_reader_answers_a_list_none_or_not_tls(noise, at, patch):
    base = client_hello(["acme-tls/1"])
    data = (base[:at] + patch + base[at + len(patch) :]) if at < len(base) else noise
    try:
        got = challenges.client_hello_alpn(data)
    except tlshello.NotTls:
        return
    assert got is None or (isinstance(got, tuple) and all(isinstance(n, bytes) for n in got))


# ------------------------------------------------------------------ the responder, hostile peers


def tls_alpn_probe(address, alpn, sni):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    with (
        socket.create_connection(address, timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        proto = tls.selected_alpn_protocol()
        closed = tls.recv(1) == b""
    return x509.load_der_x509_certificate(der), proto, closed


def test_tls_alpn_responder_serves_the_challenge_certificate_only_for_acme_tls_1():
    key_auth = "tok.thumb"
    with challenges.ChallengeResponder(("127.0.0.1", 0), None) as r:
        r.expect("tls-alpn-01", "ip", "127.0.0.1", "tok", key_auth)
        sni = "1.0.0.127.in-addr.arpa"  # RFC 8738 §6
        cert, proto, closed = tls_alpn_probe(r.tls_address, ["acme-tls/1"], sni)
        assert proto == "acme-tls/1" and closed  # closed right after the handshake
        ext = cert.extensions.get_extension_for_oid(
            x509.ObjectIdentifier(challenges.ACME_IDENTIFIER_OID)
        )
        assert ext.critical
        import hashlib

        assert ext.value.value == b"\x04\x20" + hashlib.sha256(key_auth.encode()).digest()
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        # Another ALPN list (even one containing acme-tls/1) or another name: no certificate.
        for alpn, name in ((["h2", "acme-tls/1"], sni), (["http/1.1"], sni)):
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                tls_alpn_probe(r.tls_address, alpn, name)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            tls_alpn_probe(r.tls_address, ["acme-tls/1"], "2.0.0.127.in-addr.arpa")
        assert r.answered["tls-alpn-01"] == 1


def http_get(address, raw: bytes, timeout=5) -> bytes:
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(raw)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out


def test_http_responder_answers_while_hostile_connections_hang_or_flood():
    with challenges.ChallengeResponder(None, ("127.0.0.1", 0), timeout=2.0) as r:
        r.expect("http-01", "ip", "127.0.0.1", TOKEN, KEY_AUTH)
        addr = r.http_address
        # A connection that never finishes its request, and one that floods headers.
        loris = socket.create_connection(addr)
        loris.sendall(b"GET /.well-known/acme-challenge/")
        flood = socket.create_connection(addr)
        flood.sendall(b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 20000 + b"\r\n")
        got = http_get(addr, f"GET /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\n\r\n".encode())
        assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(KEY_AUTH.encode())
        assert http_get(addr, b"GET /index.html HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
        # The slow one is cut off after the connection timeout.
        loris.settimeout(5)
        t0 = time.monotonic()
        assert loris.recv(100) == b""
        assert time.monotonic() - t0 < 4
        loris.close()
        # The flood was cut off at MAX_HTTP_REQUEST without an answer.
        flood.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert flood.recv(100) == b""
        flood.close()


def test_responder_refuses_a_port_in_use_with_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with (
            pytest.raises(challenges.ResponderError, match=f"cannot listen on 127.0.0.1:{port}"),
            challenges.ChallengeResponder(None, ("127.0.0.1", port)),
        ):
            pass
