"""The operations sections of the medtls configuration: metrics, audit, clock, control.

`parse_ops_sections(raw)` takes the whole parsed YAML mapping, reads only the keys in
OPS_SECTIONS and returns (OpsConfig, problems), each problem a (key path, message) pair.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import reprlib
from dataclasses import dataclass, field

OPS_SECTIONS = ("metrics", "audit", "clock", "control")

DEFAULT_METRICS_LISTEN = "127.0.0.1:9750"
DEFAULT_CONTROL_SOCKET = "/run/medtls/control.sock"
AUDIT_TRANSPORTS = ("tls", "local", "none")
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 60, 60, 4, 4


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9750


@dataclass(frozen=True)
class AuditConfig:
    transport: str = "local"  # tls | local | none
    host: str = ""
    port: int = 6514
    ca: str = ""
    certificate: str = ""
    key: str = ""
    server_name: str = ""
    local_socket: str = "/dev/log"
    queue_size: int = 10000
    source_id: str = ""
    site_id: str = ""
    retry_interval: float = 5.0
    spool: str = ""  # "": the systemd state directory's audit.spool, if any; "off"; a path


@dataclass(frozen=True)
class ClockConfig:
    require_sync: bool = True
    sync_file: str = "/run/systemd/timesync/synchronized"
    not_before: float = 1735689600.0  # 2025-01-01: an earlier clock is certainly wrong


@dataclass(frozen=True)
class ControlConfig:
    socket: str = DEFAULT_CONTROL_SOCKET
    watch_files: bool = True


@dataclass(frozen=True)
class OpsConfig:
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    control: ControlConfig = field(default_factory=ControlConfig)


def parse_host_port(text: str) -> tuple[str, int]:
    """'127.0.0.1:9750' or '[::1]:9750' -> (host, port); raises ValueError."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [IPv6]:PORT, got {text!r}")
    else:
        host, _, port_text = text.rpartition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be an IP address, got {host!r}") from None
    port = _port(port_text)
    return host, port


def _port(value) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"port must be an integer 1-65535, got {value!r}") from None
    if isinstance(value, bool) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer 1-65535, got {value!r}")
    return port


class _Section:
    """Reads one mapping, collecting errors with the key path instead of raising."""

    def __init__(self, name: str, raw, errors: list[str]):
        self.name = name
        self.errors = errors
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            errors.append(f"{name}: expected a mapping, got {type(raw).__name__}")
            raw = {}
        self.raw = raw

    def unknown(self, known: tuple[str, ...]) -> None:
        for key in self.raw:
            if key not in known:
                self.errors.append(f"{self.name}.{key}: unknown key (allowed: {', '.join(known)})")

    def get(self, key, kind, default, check=None):
        if key not in self.raw or self.raw[key] is None:
            return default
        value = self.raw[key]
        path = f"{self.name}.{key}"
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            # bounded: YAML aliases can make a small file a huge value
            self.errors.append(f"{path}: expected {kind.__name__}, got {_REPR.repr(value)}")
            return default
        if check is not None:
            problem = check(value)
            if problem:
                self.errors.append(f"{path}: {problem}")
                return default
        return value


def _positive(value) -> str | None:
    return None if value > 0 else f"must be > 0, got {value!r}"


def _absolute(value: str) -> str | None:
    return None if value.startswith("/") else f"must be an absolute path, got {value!r}"


def _metrics(raw, errors) -> MetricsConfig:
    s = _Section("metrics", raw, errors)
    s.unknown(("enabled", "listen"))
    enabled = s.get("enabled", bool, True)
    listen = s.get("listen", str, DEFAULT_METRICS_LISTEN)
    try:
        host, port = parse_host_port(listen)
    except ValueError as exc:
        errors.append(f"metrics.listen: {exc}")
        host, port = parse_host_port(DEFAULT_METRICS_LISTEN)
    return MetricsConfig(enabled=enabled, host=host, port=port)


def _audit(raw, errors) -> AuditConfig:
    s = _Section("audit", raw, errors)
    known = (
        "transport",
        "host",
        "port",
        "ca",
        "certificate",
        "key",
        "server_name",
        "local_socket",
        "queue_size",
        "source_id",
        "site_id",
        "retry_interval",
        "spool",
    )
    s.unknown(known)

    def transport_ok(v):
        return None if v in AUDIT_TRANSPORTS else f"must be one of {', '.join(AUDIT_TRANSPORTS)}"

    transport = s.get("transport", str, "local", transport_ok)
    host = s.get("host", str, "")
    port = s.get("port", int, 6514, lambda v: None if 1 <= v <= 65535 else "must be 1-65535")
    ca = s.get("ca", str, "", _absolute)
    cert = s.get("certificate", str, "", _absolute)
    key = s.get("key", str, "", _absolute)
    if transport == "tls":
        if not host:
            errors.append("audit.host: required when audit.transport is tls")
        else:
            if any(c.isspace() or c in "/:@[]" for c in host):
                errors.append(f"audit.host: not an IP address or host name: {host!r}")
        if not ca:
            errors.append("audit.ca: required when audit.transport is tls (CA of the repository)")
        if bool(cert) != bool(key):
            errors.append("audit.certificate: certificate and key must be given together")
    return AuditConfig(
        transport=transport,
        host=host,
        port=port,
        ca=ca,
        certificate=cert,
        key=key,
        server_name=s.get("server_name", str, ""),
        local_socket=s.get("local_socket", str, "/dev/log", _absolute),
        queue_size=s.get("queue_size", int, 10000, _positive),
        source_id=s.get("source_id", str, ""),
        site_id=s.get("site_id", str, ""),
        retry_interval=s.get("retry_interval", float, 5.0, _positive),
        spool=s.get("spool", str, "", _spool_path),
    )


def _spool_path(value: str) -> str | None:
    if value == "off" or (value.startswith("/") and not value.endswith("/")):
        return None
    return f"must be an absolute file path or off, got {value!r}"


def _clock(raw, errors) -> ClockConfig:
    s = _Section("clock", raw, errors)
    s.unknown(("require_sync", "sync_file", "not_before"))
    not_before = ClockConfig.not_before
    value = s.raw.get("not_before")
    if value is not None:
        try:
            if isinstance(value, dt.datetime):
                moment = value
            elif isinstance(value, dt.date):
                moment = dt.datetime(value.year, value.month, value.day)
            else:
                moment = dt.datetime.fromisoformat(str(value))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            not_before = moment.timestamp()
        except ValueError:
            errors.append(f"clock.not_before: expected a date like 2026-01-31, got {value!r}")
    return ClockConfig(
        require_sync=s.get("require_sync", bool, True),
        sync_file=s.get("sync_file", str, ClockConfig.sync_file, _absolute),
        not_before=not_before,
    )


def _control(raw, errors) -> ControlConfig:
    s = _Section("control", raw, errors)
    s.unknown(("socket", "watch_files"))
    return ControlConfig(
        socket=s.get("socket", str, DEFAULT_CONTROL_SOCKET, _absolute),
        watch_files=s.get("watch_files", bool, True),
    )


def parse_ops_sections(raw) -> tuple[OpsConfig, list[tuple[str, str]]]:
    """Validate the ops sections of a whole config mapping; other keys are ignored here."""
    errors: list[str] = []
    if not isinstance(raw, dict):
        raw = {}
    cfg = OpsConfig(
        metrics=_metrics(raw.get("metrics"), errors),
        audit=_audit(raw.get("audit"), errors),
        clock=_clock(raw.get("clock"), errors),
        control=_control(raw.get("control"), errors),
    )
    return cfg, [_split(e) for e in errors]


def _split(error: str) -> tuple[str, str]:
    path, _, message = error.partition(": ")
    return path, message
