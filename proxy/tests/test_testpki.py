"""medtls_testpki, the one test PKI of the repository: what it makes, checked by OpenSSL."""

import ast
import ipaddress
import subprocess
from pathlib import Path

import medtls_testpki as tp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

MEDTLS = Path(__file__).resolve().parents[1] / "medtls"


def _verify(ca: Path, crt: Path, purpose: str = "sslserver") -> str:
    r = subprocess.run(
        ["openssl", "verify", "-purpose", purpose, "-CAfile", str(ca), "-untrusted", str(crt),
         str(crt)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return r.stdout + r.stderr


def test_medtls_never_imports_the_test_pki():
    offenders = []
    for path in sorted(MEDTLS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}:{node.lineno}" for n in names if n.startswith("medtls_testpki")]
    assert offenders == []


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    d = tmp_path_factory.mktemp("testpki")
    root = tp.CA(d, "Root", days=30)
    inter = tp.CA(d, "Intermediate", issuer=root, cert_file=None)
    return d, root, inter


def test_leaf_through_intermediate_verifies_and_carries_its_chain(chain):
    _, root, inter = chain
    crt, key = inter.issue("srv", ips=("198.18.0.20",), dns=("pacs.test",), eku=("server",))
    assert "srv.crt: OK" in _verify(root.path, crt)
    assert "unsuitable certificate purpose" in _verify(root.path, crt, "sslclient")
    pems = crt.read_bytes().count(b"BEGIN CERTIFICATE")
    assert pems == 2 and inter.leaves["srv"].chain == (inter.issuer.cert,)
    assert crt.stat().st_mode & 0o777 == 0o600 and key.stat().st_mode & 0o777 == 0o600
    san = inter.leaves["srv"].cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("198.18.0.20")]
    assert san.value.get_values_for_type(x509.DNSName) == ["pacs.test"]


@pytest.mark.parametrize(
    ("window", "error"),
    [(tp.EXPIRED, "certificate has expired"), (tp.NOT_YET_VALID, "certificate is not yet valid")],
)
def test_validity_windows(chain, window, error):
    _, root, inter = chain
    crt, _ = inter.issue("window", **window)
    assert error in _verify(root.path, crt)


def test_wrong_ca_and_self_signed_leaves_do_not_verify(chain):
    d, root, _ = chain
    rogue_crt, _ = tp.CA(d / "rogue", "Root").issue("rogue")
    assert "unable to get local issuer certificate" in _verify(root.path, rogue_crt)
    self_signed, _ = tp.save(tp.make_leaf("pacs", None), d, "self")
    assert "self-signed certificate" in _verify(root.path, self_signed)


def test_key_types_usages_and_encrypted_keys(tmp_path):
    ca = tp.CA(tmp_path, key_type="rsa", org="Test Hospital")
    ca.issue("client", eku=("client",))
    leaf = ca.leaves["client"]
    assert isinstance(leaf.key, rsa.RSAPrivateKey) and leaf.key.key_size == 2048
    assert leaf.cert.subject.rfc4514_string() == "O=Test Hospital,CN=client"
    usage = leaf.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    eku = leaf.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca.issue("ec", key_type="ecdsa")
    assert isinstance(ca.leaves["ec"].key.curve, ec.SECP256R1)
    enc = tp.write_pem(tmp_path / "enc.key", leaf.key, passphrase=b"pw")
    assert load_pem_private_key(enc.read_bytes(), b"pw").private_numbers() == (
        leaf.key.private_numbers()
    )
    with pytest.raises(ValueError, match="unknown key type 'dsa'"):
        tp.new_key("dsa")
    with pytest.raises(ValueError, match="unknown extended key usage 'email'"):
        tp.make_leaf("x", None, eku=("email",))
