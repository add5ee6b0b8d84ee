"""A fresh private key for each order and its CSR (enroll process only: uses cryptography).

The key is generated on the box and never leaves it; the CSR carries the configured identifiers
as subjectAltNames (IP addresses, RFC 8738, and DNS names), from which the ACME client builds the
order's identifiers.
"""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from medtls.config import KEY_TYPES


def new_key(key_type: str) -> bytes:
    """A new private key as unencrypted PKCS#8 PEM."""
    if key_type == "ec-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "ec-p384":
        key = ec.generate_private_key(ec.SECP384R1())
    elif key_type in ("rsa-2048", "rsa-3072"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    else:
        raise ValueError(f"unknown key type {key_type!r} (one of {', '.join(KEY_TYPES)})")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key_pem: bytes, ips, dns) -> bytes:
    """A PEM CSR signed by `key_pem` with `ips` as IP SANs and `dns` as DNS SANs; the subject
    CN is the first DNS name, else the first IP (CAs such as EJBCA want one)."""
    ips, dns = list(ips), list(dns)
    if not ips and not dns:
        raise ValueError("a CSR needs at least one IP or DNS identifier")
    key = serialization.load_pem_private_key(key_pem, password=None)
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (dns or ips)[0])]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)
