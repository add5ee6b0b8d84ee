"""The certificates status and metrics report: the engine's list of its generation, plus the
audit channel's own certificates (only ops loads those), each (path, role) once."""

from __future__ import annotations

from medtls.config import Config
from medtls.config.ops import AuditConfig
from medtls.core import certinfo
from medtls.core.certinfo import CertInfo


def audit_paths(audit: AuditConfig) -> list[tuple[str, str, str]]:
    """(role, key, path) of the audit channel's certificate files."""
    if audit.transport != "tls":
        return []
    found = [
        (certinfo.AUDIT_CA, "audit.ca", audit.ca),
        (certinfo.AUDIT_CLIENT, "audit.certificate", audit.certificate),
    ]
    return [(role, key, str(path)) for role, key, path in found if path]


def audit_infos(audit: AuditConfig) -> tuple[list[CertInfo], list[str]]:
    """The audit channel's certificates, and a problem line per unreadable file."""
    infos: list[CertInfo] = []
    problems: list[str] = []
    for role, key, path in audit_paths(audit):
        try:
            infos.extend(certinfo.read_infos(role, key, path))
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
        except ValueError as exc:
            problems.append(f"{path}: not a PEM certificate ({exc})")
    return infos, problems


def once_per_file(infos: list[CertInfo]) -> list[CertInfo]:
    """Each certificate of a (path, role) once: several routes may name the same CA file."""
    first_key: dict[tuple[str, str], str] = {}
    return [i for i in infos if first_key.setdefault((i.path, i.role), i.key) == i.key]


def watched_files(config: Config) -> list[str]:
    """Files whose change should trigger a reload: certificates, keys, CA bundles, CRLs."""
    files: list[str] = []

    def add(path) -> None:
        if path and str(path) not in files:
            files.append(str(path))

    add(config.identity.certificate)
    add(config.trust_ca)
    add(config.trust_crl)
    for peer in config.outbound:
        add(peer.verify.ca if peer.verify else None)
    for port in config.inbound:
        add(port.ca)
    for _, _, path in audit_paths(config.ops.audit):
        add(path)
    add(config.identity.key)
    return files
