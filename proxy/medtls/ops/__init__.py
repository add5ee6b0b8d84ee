"""Operations for the medtls daemon: systemd, clock safety, metrics, health, audit trail.

The proxy core reports what happens through the observer interface in medtls.core.events; this
package turns those events into sd_notify messages, Prometheus metrics, per-connection log
lines and IHE ATNA audit records, and serves `medtls status` / `medtls reload`.
"""
