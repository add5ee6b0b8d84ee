"""The audit trail of one daemon: builds PS3.15 A.5 messages and hands them to the transport
configured in `audit:` (RFC 5425 TLS, local syslog socket, or none)."""

from __future__ import annotations

import logging
import os
import socket

from medtls.config.ops import AuditConfig

from . import audit_xml, auditspool, syslog

log = logging.getLogger("medtls.ops")


class Auditor:
    def __init__(
        self,
        cfg: AuditConfig,
        node_address: str = "",
        environ: dict[str, str] | None = None,
        worker: tuple[int, int] | None = None,
    ):
        self.cfg = cfg
        base = ""
        if cfg.spool != "off":
            base = cfg.spool or auditspool.default_path(os.environ if environ is None else environ)
        # Each worker process has its own queue, so its own file (PATH.N); the first also reads
        # the files no process of this run would read (another `workers:` count before).
        self.spool, self._adopt = auditspool.layout(base, worker)
        self.source = audit_xml.Source(
            audit_source_id=cfg.source_id or socket.gethostname(),
            site_id=cfg.site_id,
            node_address=node_address,
        )
        self.sender: syslog.AuditSender | None = None
        self._last_error = ""

    def start(self) -> None:
        a = self.cfg
        if a.transport == "none":
            return
        if a.transport == "tls":
            try:
                ctx = syslog.client_context(a.ca, a.certificate, a.key)
            except (OSError, ValueError) as exc:
                log.error("audit: cannot load TLS material (audit.ca/certificate/key): %s", exc)
                return
            connect = syslog.tls_connector(a.host, a.port, ctx, a.server_name)
            stream = True
        else:
            connect = syslog.local_connector(a.local_socket)
            stream = False
        self.sender = syslog.AuditSender(
            connect, a.queue_size, a.retry_interval, stream=stream, on_error=self._on_error
        )
        self._load_spool()
        self.sender.start()

    def _load_spool(self) -> None:
        for path in self._adopt() + ([self.spool] if self.spool else []):
            messages, problem = auditspool.take(path)
            if problem:
                log.error("audit.spool: %s", problem)
            if messages:
                lost = self.sender.preload(messages)
                log.info(
                    "audit: %d messages of a previous run from %s queued first%s",
                    len(messages) - lost,
                    path,
                    f"; the {lost} oldest dropped (audit.queue_size)" if lost else "",
                )

    def _on_error(self, text: str) -> None:
        if text != self._last_error:
            log.warning("audit: repository %s unreachable, queueing: %s", self._where(), text)
            self._last_error = text

    def stop(self, flush_timeout: float = 3.0) -> None:
        if self.sender is None:
            return
        self.sender.stop(flush_timeout=flush_timeout)
        left = self.sender.take_queued()
        if not left:
            return
        where = self._where()
        if not self.spool:
            log.error(
                "audit: %d messages for %s lost at stop: the repository was unreachable and "
                "audit.spool is off",
                len(left),
                where,
            )
            return
        try:
            auditspool.save(self.spool, left)
        except OSError as e:
            log.error(
                "audit: %d messages for %s lost at stop: cannot write audit.spool %s: %s",
                len(left),
                where,
                self.spool,
                e.strerror or e,
            )
            return
        log.warning(
            "audit: repository %s unreachable at stop: %d messages kept in %s for the next start",
            where,
            len(left),
            self.spool,
        )

    def _where(self) -> str:
        a = self.cfg
        return f"{a.host}:{a.port}" if a.transport == "tls" else a.local_socket

    def submit(self, xml: str, failure: bool = False) -> None:
        if self.sender is None:
            return
        self.sender.submit(
            syslog.format_message(
                xml,
                hostname=self.source.audit_source_id,
                severity=syslog.SEVERITY_WARNING if failure else syslog.SEVERITY_NOTICE,
            )
        )

    # one method per audited event

    def application(self, started: bool) -> None:
        if self.sender is None:
            return
        self.submit(audit_xml.application_activity(self.source, started=started))

    def node_authentication(self, success: bool, **kw) -> None:
        if self.sender is None:
            return
        self.submit(audit_xml.node_authentication(self.source, success, **kw), not success)

    def configuration_change(self, success: bool, what: str, detail: str, security=True):
        if self.sender is None:
            return
        self.submit(
            audit_xml.configuration_change(self.source, success, what, detail, security),
            not success,
        )

    def counters(self) -> dict:
        s = self.sender
        return {
            "transport": self.cfg.transport,
            "queued": s.queued() if s else 0,
            "sent": s.sent if s else 0,
            "dropped": s.dropped if s else 0,
            "connected": s.connected if s else False,
            "last_error": s.last_error if s else "",
        }
