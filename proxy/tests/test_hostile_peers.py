"""Hostile peer certificates, CA-signed and accepted by OpenSSL, through real `medtls run`
processes: the connection fails on its own (result=bad_certificate, or the ACL refuses), the
daemon stays up, and the next good connection works (issue 16, defects 1 and 6)."""

from __future__ import annotations

import pytest
from cryptography import x509
from hostile import TRIGGERS, der, leaf, trigger
from hostile_bench import Bench, conn_line
from test_lifecycle import wait_for


@pytest.fixture(scope="module")
def bench(pki, tmp_path_factory):
    b = Bench(pki, tmp_path_factory.mktemp("hostile"))
    yield b
    b.close()


def _inbound(bench: Bench, cert_der: bytes) -> str:
    shaken, port = bench.present_inbound(cert_der)
    assert shaken, "OpenSSL refused it: the test would prove nothing"
    line = conn_line(bench.b, port)
    assert bench.alive(), bench.b.log()
    assert bench.good_inbound() == b"hello"
    return line


def _outbound(bench: Bench, cert_der: bytes, route: str = "evil") -> str:
    shaken = bench.server.handshakes
    got, port = bench.present_outbound(cert_der, route)
    line = conn_line(bench.a, port)
    assert wait_for(lambda: bench.server.handshakes == shaken + 1), "OpenSSL refused it"
    assert got == b"", "the device's bytes reached the hostile server"
    assert bench.alive(), bench.a.log()
    assert bench.good_outbound() == b"hello"
    return line


@pytest.mark.parametrize("kind", TRIGGERS)
def test_hostile_client_certificate_fails_alone(bench, kind):
    line = _inbound(bench, trigger(kind, bench.issuer, bench.keys[0]))
    assert " result=bad_certificate " in line, line
    assert "direction=inbound" in line


@pytest.mark.parametrize("kind", TRIGGERS)
def test_hostile_server_certificate_fails_alone(bench, kind):
    line = _outbound(bench, trigger(kind, bench.issuer, bench.keys[0]))
    assert " result=bad_certificate " in line, line
    assert "direction=outbound" in line


def test_wildcard_client_san_does_not_satisfy_an_exact_dns_rule(bench):
    cert = leaf(bench.issuer, bench.keys[0], cns=("wild",), sans=[x509.DNSName("*.test")])
    line = _inbound(bench, der(cert))
    assert " result=acl_denied " in line, line


def test_client_with_two_cns_matches_no_cn_rule(bench):
    cert = leaf(bench.issuer, bench.keys[0], cns=("box-a", "evil"))
    line = _inbound(bench, der(cert))
    assert " result=acl_denied " in line, line


def test_server_with_two_cns_matches_no_cn_rule(bench):
    cert = leaf(bench.issuer, bench.keys[0], cns=("evil", "other"))
    line = _outbound(bench, der(cert), route="evil2")
    assert " result=identity_mismatch " in line, line


def test_ca_certificate_refused_as_client_and_as_server(bench):
    cert = der(leaf(bench.issuer, bench.keys[0], cns=("box-a",), ca=True))
    assert " result=bad_certificate " in _inbound(bench, cert)
    cert = der(leaf(bench.issuer, bench.keys[0], cns=("evil",), ca=True))
    line = _outbound(bench, cert, route="evil2")
    assert " result=bad_certificate " in line and "CA certificate" in line, line


def test_plain_server_certificate_still_accepted(bench):
    """The control: the same rules admit an ordinary certificate both ways."""
    got, port = bench.present_outbound(der(leaf(bench.issuer, bench.keys[0])), "evil2")
    assert got == b"x"
    assert " result=ok " in conn_line(bench.a, port)
    assert bench.good_inbound() == b"hello"
