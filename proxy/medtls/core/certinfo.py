"""What is known of one loaded certificate or CRL: the one record status and metrics read.

`medtls.tls.material.validate` builds the list of a configuration generation once, from the
bytes it loads; the operations wing reads that list and parses only what the engine never
loads (the audit channel's own certificates).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from medtls.core.certparse import CertFacts, parse_der, pem_certificates, sha256_fingerprint

# Roles, as the `role` label of medtls_certificate_expiry_seconds and the status show them.
IDENTITY = "identity"
CA = "ca"
CRL = "crl"
PEER_CA = "peer-ca"
AUDIT_CA = "audit-ca"
AUDIT_CLIENT = "audit-client"


@dataclass(frozen=True, slots=True)
class CertInfo:
    role: str  # one of the roles above
    key: str  # the configuration key naming the file, e.g. "outbound[0].verify.ca"
    path: str
    subject: str  # for a CRL: its issuer
    not_after: float  # epoch seconds; for a CRL its next update (inf: none given)
    fingerprint_sha256: str
    not_before: float | None = None  # epoch seconds (certificates only)
    serial: str = ""  # lower-case hex (certificates only)

    @property
    def lifetime(self) -> float | None:
        if self.not_before is None or self.not_after == float("inf"):
            return None
        return self.not_after - self.not_before

    @property
    def not_after_iso(self) -> str:
        if self.not_after == float("inf"):
            return ""
        return dt.datetime.fromtimestamp(self.not_after, dt.UTC).isoformat()

    def seconds_left(self, now: float) -> float:
        return self.not_after - now


def certificate_infos(
    role: str, key: str, path: str, ders: list[bytes], facts: list[CertFacts] | None = None
) -> list[CertInfo]:
    """One record per DER certificate; `facts` when the caller has parsed them already."""
    if facts is None:
        facts = [parse_der(der) for der in ders]
    return [
        CertInfo(
            role,
            key,
            str(path),
            f.subject,
            f.not_after.timestamp(),
            sha256_fingerprint(der),
            f.not_before.timestamp() if f.not_before else None,
            f.serial,
        )
        for der, f in zip(ders, facts, strict=True)
    ]


def crl_infos(key: str, path: str, data: bytes) -> list[CertInfo]:
    """One record per CRL of a PEM file; raises ValueError naming the bad block."""
    from medtls.core.crlparse import crl_blocks, parse_crl  # only CRL users pay for the import

    out = []
    for block in crl_blocks(data):
        try:
            facts = parse_crl(block.der)
        except ValueError as e:
            raise ValueError(f"{block.where}: {e}") from None
        due = facts.next_update.timestamp() if facts.next_update else float("inf")
        out.append(CertInfo(CRL, key, str(path), facts.issuer, due, sha256_fingerprint(block.der)))
    return out


def read_infos(role: str, key: str, path: str) -> list[CertInfo]:
    """Every certificate (or, for role crl, every CRL) of a PEM file; raises OSError/ValueError."""
    with open(path, "rb") as fh:
        data = fh.read()
    if role == CRL:
        return crl_infos(key, path, data)
    ders = pem_certificates(data)
    if not ders:
        raise ValueError("no certificate found")
    return certificate_infos(role, key, path, ders)
