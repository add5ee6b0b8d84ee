"""The box's state in one word, for readers who cannot log in: the console and the board LED.

`classify` is a plain function of the daemon's status dict (None when the daemon does not
answer), so the console, the LED and /healthz agree on what "healthy" means. The order is the
order of urgency: a box that passes no traffic says so before anything else.
"""

from __future__ import annotations

from . import health

HEALTHY = "healthy"
WARNING = "warning"  # a peer's last connection failed, or another problem of `medtls status`
CLOCK_UNSYNCED = "clock_unsynced"
NO_CERTIFICATE = "no_certificate"  # enrolling, or the identity is missing or expired
FAIL_CLOSED = "fail_closed"  # the device's traffic is blocked
STATES = (HEALTHY, WARNING, CLOCK_UNSYNCED, NO_CERTIFICATE, FAIL_CLOSED)


def classify(
    status: dict | None,
    error: str = "",
    certificate_present: bool | None = True,
    now: float | None = None,
) -> tuple[str, str]:
    """(state, reason in words). `status` is what `medtls status --json` prints, None with
    `error` when the daemon does not answer; `certificate_present` is False when the configured
    identity certificate file does not exist (not enrolled yet), None when unknown."""
    if status is None:
        # A box waiting for enrollment runs its daemon (enrolling); one that does not answer is
        # down, whatever else is missing.
        missing = " (and no identity certificate)" if certificate_present is False else ""
        return FAIL_CLOSED, f"medtls not running{missing}: {error}"
    if status.get("draining"):
        return FAIL_CLOSED, "medtls is stopping"
    enrolling = (status.get("snapshot") or {}).get("enrolling")
    if enrolling:
        return NO_CERTIFICATE, enrolling
    if not status.get("ready"):
        return FAIL_CLOSED, "medtls is not ready"
    if not status.get("listeners"):
        return FAIL_CLOSED, "no listener is open"
    level, problems = health.evaluate(status, now)
    for worker in status.get("workers") or []:
        if worker.get("error") or not worker.get("ready"):
            return FAIL_CLOSED, f"worker {worker.get('index')} is not serving"
    device = status.get("device") or {}
    if not device.get("identity_subject"):
        return NO_CERTIFICATE, "no identity certificate loaded"
    expired = [
        text for lvl, text in problems if "identity certificate" in text and "EXPIRED" in text
    ]
    if expired:
        return NO_CERTIFICATE, expired[0]
    clock = status.get("clock") or {}
    if clock and not clock.get("synchronized"):
        return CLOCK_UNSYNCED, f"clock not synchronised: {clock.get('detail', '')}"
    if level != health.OK:
        worst = max(problems, key=lambda p: p[0])
        return WARNING, worst[1]
    return HEALTHY, "serving"


def traffic(status: dict | None, state: str) -> str:
    """Whether the device's traffic passes, in one line (the fail-closed state)."""
    if status is None or state == FAIL_CLOSED:
        return "BLOCKED (fail closed): the device's traffic does not leave the box"
    clock = status.get("clock") or {}
    if clock and not clock.get("validation_allowed", True):
        return "BLOCKED (fail closed): TLS refused until the clock is synchronised"
    return "passing, TLS enforced"
