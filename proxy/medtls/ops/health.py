"""Health verdict and human summary from the daemon's status dict (no I/O).

Exit codes follow the monitoring-plugin convention so Nagios/Icinga, Ansible and scripts
can use `medtls status` directly: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (daemon unreachable).
"""

from __future__ import annotations

import time

from medtls.core.events import CONNECT_FAILED

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Expiry as a fraction of the certificate's lifetime, capped for long-lived ones: WARNING with
# less than a third left (an enrolled certificate renews at two thirds: its renewal is overdue)
# but at most 14 days ahead; CRITICAL with less than a tenth left, at most 3 days ahead.
# 7-day certificate: WARNING 2.3 days, CRITICAL 17 h before expiry; 90 days: 14 d / 3 d;
# 2 years (by hand): 14 d / 3 d. Without a known start (older status): 14 d, 3 d.
EXPIRY_WARNING_DAYS = 14
EXPIRY_WARNING_FRACTION = 1 / 3
EXPIRY_CRITICAL_DAYS = 3
EXPIRY_CRITICAL_FRACTION = 1 / 10


def expiry_windows(not_before: float | None, not_after: float) -> tuple[float, float]:
    """(warning, critical) seconds before not_after."""
    warn, crit = EXPIRY_WARNING_DAYS * 86400.0, EXPIRY_CRITICAL_DAYS * 86400.0
    if not_before is not None and not_after > not_before:
        life = not_after - not_before
        warn, crit = (
            min(warn, life * EXPIRY_WARNING_FRACTION),
            min(crit, life * EXPIRY_CRITICAL_FRACTION),
        )
    return warn, crit


CRL_DUE_WARNING_SECONDS = 86400  # a CRL normally has days left; under one, its renewal stalled
DEVICE_UNREACHABLE = CONNECT_FAILED  # inbound: the device behind the port did not answer


def evaluate(status: dict, now: float | None = None) -> tuple[int, list[tuple[int, str]]]:
    """(worst level, [(level, problem)]) for a status dict produced by OpsRuntime.status()."""
    now = status.get("now", time.time()) if now is None else now
    problems: list[tuple[int, str]] = []

    def add(level, text):
        problems.append((level, text))

    if status.get("draining"):
        add(CRITICAL, "daemon is stopping (draining connections)")
    elif not status.get("ready"):
        add(CRITICAL, "daemon is not ready (listeners or TLS material not loaded)")
    if not status.get("listeners"):
        add(CRITICAL, "no listener is open")
    for w in status.get("workers") or []:
        if w.get("error"):
            add(CRITICAL, f"worker {w['index']} does not answer: {w['error']}")
        elif not w.get("ready"):
            add(CRITICAL, f"worker {w['index']} (pid {w.get('pid')}) is not ready")

    clock = status.get("clock") or {}
    if clock and not clock.get("synchronized"):
        if clock.get("require_sync", True):
            add(
                CRITICAL,
                f"clock not synchronised, certificates are not validated: "
                f"{clock.get('detail', '')}",
            )
        else:
            add(WARNING, f"clock not synchronised, validating anyway: {clock.get('detail', '')}")

    for problem in status.get("certificate_problems") or []:
        add(CRITICAL, f"certificate file: {problem}")
    for cert in status.get("certificates") or []:
        left = cert["not_after"] - now
        if cert["role"] == "crl":  # reissued every few days: only a stalled renewal is news
            label = f"CRL of {cert['subject']} ({cert['path']})"
            if left <= 0:
                add(CRITICAL, f"{label} EXPIRED {_ago(-left)} ago: its peers are refused")
            elif left < CRL_DUE_WARNING_SECONDS:
                add(WARNING, f"{label} due for renewal in {_span(left)}")
            continue
        label = f"{cert['role']} certificate {cert['subject']} ({cert['path']})"
        warn, crit = expiry_windows(cert.get("not_before"), cert["not_after"])
        if left <= 0:
            add(CRITICAL, f"{label} EXPIRED {_ago(-left)} ago")
        elif left < crit:
            add(CRITICAL, f"{label} expires in {_span(left)}")
        elif left < warn:
            add(WARNING, f"{label} expires in {_span(left)}")

    update = status.get("update") or {}
    if update.get("warning") or update.get("state_error"):
        add(WARNING, update["line"])
    enrollment = status.get("enrollment") or {}
    phase = enrollment.get("phase")
    if phase == "enrolling":
        add(
            CRITICAL,
            "enrolling: no identity certificate issued yet"
            + (f"; last error: {enrollment['last_error']}" if enrollment.get("last_error") else ""),
        )
    elif phase in ("failed", "expired"):
        add(
            WARNING if phase == "failed" else CRITICAL,
            f"enrollment: renewal failing ({enrollment.get('attempts')} attempts, next "
            f"{_stamp(enrollment.get('next_renewal'))}): {enrollment.get('last_error')}",
        )
    elif phase == "unknown":
        add(WARNING, f"enrollment state unreadable: {enrollment.get('state_error')}")
    waiting = (status.get("snapshot") or {}).get("enrolling")
    if waiting and phase != "enrolling":  # issued, but the daemon has not loaded it (reload?)
        add(CRITICAL, f"not serving: {waiting}")

    reloads = status.get("reloads") or {}
    if reloads.get("last_result") == "failed":
        add(WARNING, f"last reload failed, old configuration in force: {reloads.get('last_error')}")

    audit = status.get("audit") or {}
    if audit.get("dropped"):
        add(WARNING, f"audit: {audit['dropped']} messages dropped (queue full)")
    if audit.get("transport") == "tls" and audit.get("queued") and not audit.get("connected"):
        add(
            WARNING,
            f"audit repository unreachable, {audit['queued']} messages queued: "
            f"{audit.get('last_error', '')}",
        )

    forward = status.get("log_forward") or {}
    if forward.get("dropped"):
        add(
            WARNING,
            f"log forwarding to {forward.get('destination')}: {forward['dropped']} messages "
            f"dropped (queue full): {forward.get('last_error', '')}",
        )

    for peer in status.get("peers") or []:
        fail, ok = peer.get("last_failure"), peer.get("last_success")
        if not fail or (ok and fail <= ok):
            continue
        if peer.get("direction") == "outbound":
            add(
                WARNING,
                f"peer {peer['name']}: last connection failed "
                f"({peer.get('last_failure_reason')}) {_ago(now - fail)} ago",
            )
        elif peer.get("last_failure_reason") == DEVICE_UNREACHABLE:
            # Inbound: a refused client is that client's problem (and any host may knock);
            # a device the box cannot reach behind its port is the box's.
            add(
                WARNING,
                f"inbound {peer['name']}: the device did not answer "
                f"({DEVICE_UNREACHABLE}) {_ago(now - fail)} ago",
            )

    worst = max((level for level, _ in problems), default=OK)
    return worst, problems


def _span(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 2 * 86400:
        return f"{seconds // 86400}d"
    if seconds >= 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _ago(seconds: float) -> str:
    return _span(seconds)


def _stamp(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts)) if ts else "not scheduled"


def _when(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
    return f"{stamp}Z ({_ago(now - ts)} ago)"


def render(status: dict, now: float | None = None) -> str:
    now = status.get("now", time.time()) if now is None else now
    level, problems = evaluate(status, now)
    out: list[str] = []
    dev = status.get("device") or {}
    out.append(
        f"medtls: {LEVEL_NAMES[level]}  (version {status.get('version', '?')}, "
        f"pid {status.get('pid')}, up "
        f"{_span(now - status.get('started', now))}, config generation "
        f"{status.get('generation', '?')})"
    )
    out.append(f"device:    ip {dev.get('ip') or 'auto'}  mac {dev.get('mac') or '-'}")
    out.append(f"identity:  {dev.get('identity_subject') or '-'}")
    if dev.get("identity_fingerprint"):
        out.append(f"           sha256 {dev['identity_fingerprint']}")
    clock = status.get("clock") or {}
    out.append(
        f"clock:     {'synchronised' if clock.get('synchronized') else 'NOT synchronised'}"
        f" ({clock.get('detail', '?')}); require_sync "
        f"{'on' if clock.get('require_sync', True) else 'off'}"
    )
    enrollment = status.get("enrollment")
    if enrollment:
        out.append(f"enrollment: {enrollment_line(enrollment)}")
    update = status.get("update")
    if update and update.get("line"):
        out.append(update["line"])
    conns = status.get("connections") or {}
    out.append(f"conns:     {conns.get('active', 0)} active, {conns.get('total', 0)} since start")
    if status.get("workers"):
        out.append("workers:")
        for w in status["workers"]:
            state = w.get("error") or (
                f"pid {w.get('pid')}  {'ready' if w.get('ready') else 'NOT ready'}  "
                f"{w.get('active', 0)} active  generation {w.get('generation')}"
            )
            out.append(f"  {w['index']:<3} {state}")
    out.append("listeners:")
    for lst in status.get("listeners") or []:
        out.append(f"  {lst['name']:<14} {lst['direction']:<9} {lst['address']}")
    out.append("peers:")
    for peer in status.get("peers") or []:
        out.append(
            f"  {peer['name']:<14} {peer['direction']:<9} active {peer.get('active', 0)}"
            f"  total {peer.get('total', 0)}"
        )
        out.append(
            f"      last success {_when(peer.get('last_success'), now)}"
            + (f"  {peer['last_success_identity']}" if peer.get("last_success_identity") else "")
        )
        out.append(
            f"      last failure {_when(peer.get('last_failure'), now)}"
            + (f"  {peer['last_failure_reason']}" if peer.get("last_failure_reason") else "")
        )
    connected = status.get("connected") or []
    if connected:
        out.append("connected now:")
        for group in connected:
            out.append(
                f"  {group['route']:<14} {group['direction']:<9} {group['count']:>3}  "
                f"{group['peer'] or '-'}" + (f"  {group['names']}" if group["names"] else "")
            )
    out.append("certificates:")
    for cert in status.get("certificates") or []:
        left = cert["not_after"] - now
        soon = "next update in" if cert["role"] == "crl" else "expires in"
        state = f"{soon} {_span(left)}" if left > 0 else f"EXPIRED {_ago(-left)} ago"
        out.append(f"  {cert['role']:<12} {state:<20} {cert['subject']}  {cert['path']}")
    reloads = status.get("reloads") or {}
    out.append(
        f"reloads:   {reloads.get('ok', 0)} ok, {reloads.get('failed', 0)} failed"
        + (
            f"; last {reloads['last_result']} {_when(reloads.get('last_time'), now)}"
            if reloads.get("last_result")
            else ""
        )
    )
    audit = status.get("audit") or {}
    out.append(
        f"audit:     {audit.get('transport', 'none')}  sent {audit.get('sent', 0)}"
        f"  queued {audit.get('queued', 0)}  dropped {audit.get('dropped', 0)}"
    )
    forward = status.get("log_forward")
    if forward:
        out.append(
            f"syslog:    {forward.get('destination')}  sent {forward.get('sent', 0)}"
            f"  queued {forward.get('queued', 0)}  dropped {forward.get('dropped', 0)}"
        )
    if problems:
        out.append("problems:")
        for lvl, text in problems:
            out.append(f"  {LEVEL_NAMES[lvl]}: {text}")
    return "\n".join(out) + "\n"


def enrollment_line(enrollment: dict) -> str:
    """Phase, serial, next renewal (or retry) and the last error of the enroll process."""
    parts = [enrollment.get("phase") or "?"]
    if enrollment.get("serial"):
        parts.append(f"serial {enrollment['serial']}")
    if enrollment.get("phase") == "unknown":
        parts.append(str(enrollment.get("state_error")))
    else:
        retry = enrollment.get("attempts") and enrollment.get("last_error")
        parts.append(
            f"next {'attempt' if retry else 'renewal'} {_stamp(enrollment.get('next_renewal'))}"
        )
    if enrollment.get("last_error"):
        parts.append(f"last error: {enrollment['last_error']}")
    return "; ".join(parts)
