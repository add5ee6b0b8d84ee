"""The operations sections of the medtls configuration: metrics, audit, clock, control.

Their keys are declared in `medtls.config.schema` with the rest of the file; `build_ops` turns the
walked sections into `OpsConfig`. `parse_ops_sections(raw)` reads only these sections of a whole
parsed YAML mapping (for `medtls status`, which needs control.socket from a file it does not
validate) and returns (OpsConfig, problems), each problem a (key path, message) pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medtls.config.schema import (  # noqa: F401 - re-exported
    AUDIT_TRANSPORTS,
    DEFAULT_CONTROL_SOCKET,
    DEFAULT_METRICS_LISTEN,
    OPS_SECTIONS,
    SCHEMA,
    Reader,
    Values,
    default,
    parse_endpoint,
)

_METRICS_LISTEN = default("metrics.listen")


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = default("metrics.enabled")
    host: str = _METRICS_LISTEN.host
    port: int = _METRICS_LISTEN.port


@dataclass(frozen=True)
class AuditConfig:
    transport: str = default("audit.transport")  # tls | local | none
    host: str = default("audit.host")
    port: int = default("audit.port")
    ca: str = default("audit.ca")
    certificate: str = default("audit.certificate")
    key: str = default("audit.key")
    server_name: str = default("audit.server_name")
    local_socket: str = default("audit.local_socket")
    queue_size: int = default("audit.queue_size")
    source_id: str = default("audit.source_id")
    site_id: str = default("audit.site_id")
    retry_interval: float = default("audit.retry_interval")
    spool: str = default("audit.spool")  # "": the systemd state directory's audit.spool; "off"


@dataclass(frozen=True)
class ClockConfig:
    require_sync: bool = default("clock.require_sync")
    sync_file: str = default("clock.sync_file")
    not_before: float = default("clock.not_before")  # an earlier clock is certainly wrong


@dataclass(frozen=True)
class ControlConfig:
    socket: str = default("control.socket")
    watch_files: bool = default("control.watch_files")


@dataclass(frozen=True)
class LedConfig:
    enabled: bool = default("led.enabled")
    names: tuple[str, ...] = default("led.names")
    interval: float = default("led.interval")


@dataclass(frozen=True)
class LogForwardConfig:
    """logging.syslog: the operational log (not the audit trail) to the site's syslog server."""

    transport: str = default("logging.syslog.transport")  # none | udp | tcp | tls
    host: str = default("logging.syslog.host")
    port: int = default("logging.syslog.port")
    ca: str = default("logging.syslog.ca")
    certificate: str = default("logging.syslog.certificate")
    key: str = default("logging.syslog.key")
    server_name: str = default("logging.syslog.server_name")
    queue_size: int = default("logging.syslog.queue_size")
    retry_interval: float = default("logging.syslog.retry_interval")


@dataclass(frozen=True)
class OpsConfig:
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    led: LedConfig = field(default_factory=LedConfig)


def parse_host_port(text: str) -> tuple[str, int]:
    """'127.0.0.1:9750', '[::1]:9750' or 'localhost:9750' -> (host, port); raises ValueError."""
    e = parse_endpoint(text)
    return e.host, e.port


def _audit(r: Reader, v: Values) -> AuditConfig:
    if v["transport"] == "tls":
        host = v["host"]
        if not host:
            r.err("audit.host", "required when audit.transport is tls")
        elif any(c.isspace() or c in "/:@[]" for c in host):
            r.err("audit.host", f"not an IP address or host name: {host!r}")
        if not v["ca"]:
            r.err("audit.ca", "required when audit.transport is tls (CA of the repository)")
        if bool(v["certificate"]) != bool(v["key"]):
            r.err("audit.certificate", "certificate and key must be given together")
    return AuditConfig(**v)


def build_log_forward(r: Reader, v: Values | None) -> LogForwardConfig:
    """logging.syslog, checked like audit's tls transport."""
    if not v:
        return LogForwardConfig()
    if v["transport"] != "none":
        host = v["host"]
        if not host:
            r.err("logging.syslog.host", f"required when transport is {v['transport']}")
        elif any(c.isspace() or c in "/:@[]" for c in host):
            r.err("logging.syslog.host", f"not an IP address or host name: {host!r}")
    if v["transport"] == "tls":
        if not v["ca"]:
            r.err("logging.syslog.ca", "required when transport is tls (CA of the server)")
        if bool(v["certificate"]) != bool(v["key"]):
            r.err("logging.syslog.certificate", "certificate and key must be given together")
    return LogForwardConfig(**v)


def build_ops(r: Reader, top: Values) -> OpsConfig:
    """OpsConfig from the walked top-level mapping (a section that was no mapping: defaults)."""
    metrics, audit, clock, control, led = (top[name] for name in OPS_SECTIONS)
    return OpsConfig(
        metrics=MetricsConfig(metrics["enabled"], metrics["listen"].host, metrics["listen"].port)
        if metrics
        else MetricsConfig(),
        audit=_audit(r, audit) if audit else AuditConfig(),
        clock=ClockConfig(**clock) if clock else ClockConfig(),
        control=ControlConfig(**control) if control else ControlConfig(),
        led=LedConfig(led["enabled"], tuple(n for n in led["names"] if n), led["interval"])
        if led
        else LedConfig(),
    )


def parse_ops_sections(
    raw: object, base_dir: Path | None = None
) -> tuple[OpsConfig, list[tuple[str, str]]]:
    """Validate the ops sections of a whole config mapping; other keys are ignored here.
    Relative paths resolve against `base_dir` (the configuration file's directory); without it
    they are errors."""
    r = Reader(base_dir, check_files=False)
    top = Values()
    raw = raw if isinstance(raw, dict) else {}
    for name in OPS_SECTIONS:
        top[name] = r.value(SCHEMA.keys[name], raw.get(name), name)
    cfg = build_ops(r, top)
    return cfg, [(p.path, p.message) for p in r.problems]
