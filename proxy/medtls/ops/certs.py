"""Facts about the certificates the daemon has loaded: subject and seconds to expiry."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from medtls.core.certparse import parse_der, pem_certificates, sha256_fingerprint


@dataclass(frozen=True)
class CertInfo:
    path: str
    role: str  # identity | ca | peer-ca | audit-ca
    subject: str
    not_after: float  # epoch seconds
    fingerprint_sha256: str


def load_infos(path: str, role: str) -> list[CertInfo]:
    """Every certificate in a PEM file (a bundle yields several); raises OSError/ValueError.
    For role "crl" every CRL: subject = its issuer, not_after = its next update."""
    with open(path, "rb") as fh:
        data = fh.read()
    if role == "crl":
        return _crl_infos(path, data)
    ders = pem_certificates(data)
    if not ders:
        raise ValueError("no certificate found")
    out = []
    for der in ders:
        facts = parse_der(der)
        out.append(
            CertInfo(
                path=path,
                role=role,
                subject=facts.subject,
                not_after=facts.not_after.timestamp(),
                fingerprint_sha256=sha256_fingerprint(der),
            )
        )
    return out


def _crl_infos(path: str, data: bytes) -> list[CertInfo]:
    from medtls.core.crlparse import crl_blocks, parse_crl

    out = []
    for block in crl_blocks(data):
        try:
            facts = parse_crl(block.der)
        except ValueError as e:
            raise ValueError(f"{block.where}: {e}") from None
        due = facts.next_update.timestamp() if facts.next_update else float("inf")
        out.append(CertInfo(path, "crl", facts.issuer, due, sha256_fingerprint(block.der)))
    return out


def paths_from_config(cfg, ops=None) -> list[tuple[str, str]]:
    """(path, role) of each certificate file a medtls Config names (duck-typed)."""
    found: list[tuple[str, str]] = []

    def add(path, role):
        if path and (str(path), role) not in found:
            found.append((str(path), role))

    identity = getattr(cfg, "identity", None)
    add(getattr(identity, "certificate", None), "identity")
    add(getattr(cfg, "trust_ca", None), "ca")
    add(getattr(cfg, "trust_crl", None), "crl")
    for peer in getattr(cfg, "outbound", ()) or ():
        add(getattr(getattr(peer, "verify", None), "ca", None), "peer-ca")
    for port in getattr(cfg, "inbound", ()) or ():
        add(getattr(port, "ca", None), "peer-ca")
    audit = getattr(ops or getattr(cfg, "ops", None), "audit", None)
    if audit is not None and audit.transport == "tls":
        add(audit.ca, "audit-ca")
        add(audit.certificate, "audit-client")
    return found


def watched_files(cfg, ops=None) -> list[str]:
    """Files whose change should trigger a reload: certificates, keys, CA bundles."""
    files = [path for path, _ in paths_from_config(cfg, ops)]
    identity = getattr(cfg, "identity", None)
    key = getattr(identity, "key", None)
    if key:
        files.append(str(key))
    return files


def collect(paths: list[tuple[str, str]]) -> tuple[list[CertInfo], list[str]]:
    infos: list[CertInfo] = []
    problems: list[str] = []
    for path, role in paths:
        try:
            infos.extend(load_infos(path, role))
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
        except ValueError as exc:
            what = "a usable PEM CRL file" if role == "crl" else "a PEM certificate"
            problems.append(f"{path}: not {what} ({exc})")
    return infos, problems


def seconds_left(info: CertInfo, now: float | None = None) -> float:
    now = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    return info.not_after - now
