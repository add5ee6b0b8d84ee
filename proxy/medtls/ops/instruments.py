"""The metrics medtls exposes (names, help, labels); values are set by OpsRuntime."""

from __future__ import annotations

from medtls import __version__
from medtls.core.events import DIRECTIONS, FAILURE_REASONS

from .metrics import Registry

# Seconds; a full handshake on a Pi takes tens of milliseconds, a resumed one a few.
HANDSHAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Instruments:
    def __init__(self, registry: Registry):
        r = registry
        self.up = r.gauge("medtls_up", "1 while the daemon runs")
        self.build_info = r.gauge(
            "medtls_build_info", "1, labelled with the medtls version", ("version",)
        )
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
        self.first_messages = r.counter(
            "medtls_first_messages_total",
            "First DICOM/HL7 messages read on protocol routes, by configured peer; ae_known: "
            "the calling AE title is one an inbound port's allow entries name",
            ("direction", "peer", "protocol", "ae_known"),
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
        self.handshake_duration = r.histogram(
            "medtls_handshake_duration_seconds",
            "Time from accepting a connection to its TLS session being established",
            ("direction",),
            HANDSHAKE_BUCKETS,
        )
        self.cert_not_after = r.gauge(
            "medtls_certificate_not_after_timestamp_seconds",
            "When each loaded certificate expires (notAfter, epoch)",
            ("role", "subject", "path"),
        )
        self.cert_not_before = r.gauge(
            "medtls_certificate_not_before_timestamp_seconds",
            "When each loaded certificate became valid (notBefore, epoch)",
            ("role", "subject", "path"),
        )
        self.crl_next_update = r.gauge(
            "medtls_crl_next_update_timestamp_seconds",
            "When each CRL of trust.crl must be replaced (nextUpdate, epoch; +Inf: none given)",
            ("issuer", "path"),
        )
        self.crl_this_update = r.gauge(
            "medtls_crl_this_update_timestamp_seconds",
            "When each CRL of trust.crl was issued (thisUpdate, epoch)",
            ("issuer", "path"),
        )
        self.cert_expiry = r.gauge(
            "medtls_certificate_expiry_seconds",
            "DEPRECATED, removed in the next release: use "
            "medtls_certificate_not_after_timestamp_seconds - time() and "
            "medtls_crl_next_update_timestamp_seconds - time()",
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
        # A/B updates (read from the update process's state.json at each scrape)
        self.update_fallbacks = r.counter(
            "medtls_update_fallbacks_total",
            "Updates that fell back to the previous slot, over the box's life",
        )
        self.update_info = r.gauge(
            "medtls_update_info",
            "1 for the last installed update: its slot, bundle version and outcome",
            ("slot", "version", "outcome"),
        )
        self.up.set(1)
        self.build_info.set(1, version=__version__)
        for result in ("ok", "failed"):
            self.reloads.inc(0, result=result)
        # Every series a dashboard or rate() needs exists from the first scrape, at 0.
        for direction in DIRECTIONS:
            for reason in FAILURE_REASONS:
                self.handshake_failures.inc(0, direction=direction, reason=reason)
            self.handshake_duration.labels(direction=direction)
