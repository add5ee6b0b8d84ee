"""logging.syslog: the operational log forwarded to the site's syslog server / SIEM.

A logging.Handler formats each record as RFC 5424 and hands it to the same bounded queue and
sender thread as the audit trail (`syslog.AuditSender`): emit never waits for the network, a
full queue drops the oldest message and counts it. Records about the forwarding itself are not
forwarded (an unreachable server must not feed its own queue).
"""

from __future__ import annotations

import logging
import socket

from . import syslog

FACILITY_DAEMON = 3
SELF = "medtls.logforward"
log = logging.getLogger(SELF)
SEVERITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def severity(levelno: int) -> int:
    for level, sev in SEVERITY.items():
        if levelno >= level:
            return sev
    return 7


class ForwardHandler(logging.Handler):
    def __init__(self, sender: syslog.AuditSender, hostname: str):
        super().__init__()
        self.sender = sender
        self.hostname = hostname

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == SELF:
            return
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.sender.submit(
                syslog.format_message(
                    text,
                    self.hostname,
                    msgid=record.name,
                    severity=severity(record.levelno),
                    facility=FACILITY_DAEMON,
                    when=record.created,
                )
            )
        except Exception:  # a log line must never break the caller
            self.handleError(record)


def udp_connector(host: str, port: int):
    def connect() -> socket.socket:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        return sock

    return connect


def tcp_connector(host: str, port: int, timeout: float = 5.0):
    def connect() -> socket.socket:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(timeout)
        return sock

    return connect


class LogForwarder:
    """Owns the handler on the root logger and the sender; `counters()` for status."""

    def __init__(self, cfg, hostname: str = ""):
        self.cfg = cfg
        self.destination = f"{cfg.transport}://{cfg.host}:{cfg.port}"
        if cfg.transport == "udp":
            connect, stream = udp_connector(cfg.host, cfg.port), False
        elif cfg.transport == "tcp":
            connect, stream = tcp_connector(cfg.host, cfg.port), True
        else:
            ctx = syslog.client_context(cfg.ca, cfg.certificate, cfg.key)
            connect, stream = syslog.tls_connector(cfg.host, cfg.port, ctx, cfg.server_name), True
        self._last_error = ""
        self.sender = syslog.AuditSender(
            connect,
            queue_size=cfg.queue_size,
            retry_interval=cfg.retry_interval,
            stream=stream,
            on_error=self._error,
        )
        self.handler = ForwardHandler(self.sender, hostname or socket.gethostname())

    def _error(self, text: str) -> None:
        if text != self._last_error:  # once per change, not once per retry
            self._last_error = text
            log.warning("logging.syslog %s unreachable: %s", self.destination, text)

    def start(self) -> None:
        self.sender.start()
        logging.getLogger().addHandler(self.handler)

    def stop(self) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.sender.stop(flush_timeout=1.0)

    def counters(self) -> dict:
        return {
            "destination": self.destination,
            "sent": self.sender.sent,
            "queued": self.sender.queued(),
            "dropped": self.sender.dropped,
            "connected": self.sender.connected,
            "last_error": self.sender.last_error,
        }


def start(cfg, hostname: str = "") -> LogForwarder | None:
    """A running forwarder for `logging.syslog`, None when it is off or cannot be set up
    (logged: the proxy serves without it)."""
    if cfg.transport == "none":
        return None
    try:
        forwarder = LogForwarder(cfg, hostname)
    except (OSError, ValueError) as exc:
        log.error("logging.syslog: cannot forward the log: %s", getattr(exc, "strerror", 0) or exc)
        return None
    forwarder.start()
    log.info("logging.syslog: forwarding the log to %s", forwarder.destination)
    return forwarder
