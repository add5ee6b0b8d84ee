"""The metrics medtls exposes (names, help, labels); values are set by OpsRuntime."""

from __future__ import annotations

from .metrics import Registry


class Instruments:
    def __init__(self, registry: Registry):
        r = registry
        self.up = r.gauge("medtls_up", "1 while the daemon runs")
        self.ready = r.gauge("medtls_ready", "1 once listeners are up and material is loaded")
        self.start_time = r.gauge("medtls_start_time_seconds", "Start time of the daemon (epoch)")
        self.generation = r.gauge("medtls_config_generation", "Configuration generation")
        self.active = r.gauge(
            "medtls_connections_active", "Open connections", ("direction", "peer")
        )
        self.total = r.counter(
            "medtls_connections_total",
            "Closed connections by result",
            ("direction", "peer", "result"),
        )
        self.bytes = r.counter(
            "medtls_bytes_total",
            "Bytes relayed, counted when a connection closes",
            ("direction", "peer", "stream"),
        )
        self.handshake_failures = r.counter(
            "medtls_handshake_failures_total",
            "Connections refused before relaying, by reason",
            ("direction", "reason"),
        )
        self.tls_total = r.counter(
            "medtls_tls_connections_total",
            "TLS sessions established by version and cipher",
            ("version", "cipher"),
        )
        self.tls_active = r.gauge(
            "medtls_tls_connections_active",
            "Open TLS sessions by version and cipher",
            ("version", "cipher"),
        )
        self.cert_expiry = r.gauge(
            "medtls_certificate_expiry_seconds",
            "Seconds until each loaded certificate expires (negative: expired)",
            ("role", "subject", "path"),
        )
        self.reloads = r.counter("medtls_reloads_total", "Reloads by result", ("result",))
        self.clock = r.gauge("medtls_clock_synchronized", "1 when the system clock is synchronised")
        self.validation = r.gauge(
            "medtls_certificate_validation_allowed",
            "0 while certificate validation is refused (clock not synchronised)",
        )
        self.audit_sent = r.counter("medtls_audit_messages_sent_total", "Audit messages sent")
        self.audit_dropped = r.counter(
            "medtls_audit_messages_dropped_total",
            "Audit messages dropped because the queue was full",
        )
        self.audit_queue = r.gauge("medtls_audit_queue_length", "Audit messages waiting")
        self.audit_connected = r.gauge(
            "medtls_audit_connected", "1 while connected to the audit repository"
        )
        # Enrollment (read from the enroll process's state.json at each scrape; none without it)
        self.enrollment_phase = r.gauge(
            "medtls_enrollment_phase", "1 for the enrollment's current phase, 0 for the others",
            ("phase",),
        )  # fmt: skip
        self.next_renewal = r.gauge(
            "medtls_certificate_next_renewal_timestamp_seconds",
            "When the next renewal (or retry) of the enrolled certificate is due (epoch)",
        )
        self.enrollment_failure = r.gauge(
            "medtls_enrollment_last_failure_timestamp_seconds",
            "When the last failed enrollment attempt was (epoch; 0: none since the last success)",
        )
        self.enrollment_attempts = r.gauge(
            "medtls_enrollment_attempts", "Failed enrollment attempts since the last success"
        )
        self.up.set(1)
        for result in ("ok", "failed"):
            self.reloads.inc(0, result=result)
