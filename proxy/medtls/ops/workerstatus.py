"""One status and one reload answer for a service of several workers (`workers:` > 1), made from
each worker's own answer on its control socket. Plain functions: the parent does the I/O."""

from __future__ import annotations

# Per peer, the counters add up and the newest event wins.
_PEER_SUMS = ("active", "total")
_PEER_LATEST = (("last_success", "last_success_identity"), ("last_failure", "last_failure_reason"))


def worker_socket(path: str, index: int) -> str:
    """Where worker `index` answers; the configured control.socket is the parent's."""
    return f"{path}.{index}"


def merge_status(answers: list[dict], pid: int, started: float) -> dict:
    """The service's status: ready only if every worker answered and is ready."""
    ok = [a for a in answers if a.get("ok")]
    workers = [_worker_line(i, a) for i, a in enumerate(answers)]
    if not ok:
        errors = "; ".join(f"worker {w['index']}: {w['error']}" for w in workers)
        return {"ok": False, "error": f"no worker answered ({errors})"}
    out = dict(ok[0])
    out.pop("snapshot", None)  # one worker's connections are not the service's
    out.update(
        pid=pid,
        started=started,
        ready=len(ok) == len(answers) and all(a.get("ready") for a in ok),
        draining=any(a.get("draining") for a in ok),
        generation=min(a.get("generation", 1) for a in ok),
        connections={
            k: sum(a.get("connections", {}).get(k, 0) for a in ok) for k in ("active", "total")
        },
        peers=_merge_peers(ok),
        certificate_problems=sorted({p for a in ok for p in a.get("certificate_problems", [])}),
        reloads=_merge_reloads(ok),
        audit=_merge_audit(ok),
        metrics={"listen": None},
        workers=workers,
    )
    return out


def merge_reload(answers: list[dict]) -> dict:
    """ok only if every worker took the new configuration; else the first error, named."""
    for i, a in enumerate(answers):
        if not a.get("ok"):
            return {"ok": False, "error": f"worker {i}: {a.get('error', 'no answer')}"}
    return {"ok": True, "generation": min(a.get("generation", 1) for a in answers)}


def _worker_line(index: int, answer: dict) -> dict:
    if not answer.get("ok"):
        return {"index": index, "error": answer.get("error", "no answer")}
    return {
        "index": index,
        "pid": answer.get("pid"),
        "ready": bool(answer.get("ready")),
        "generation": answer.get("generation"),
        "active": answer.get("connections", {}).get("active", 0),
    }


def _merge_peers(answers: list[dict]) -> list[dict]:
    merged: dict[str, dict] = {}
    for a in answers:
        for peer in a.get("peers", []):
            m = merged.setdefault(peer["name"], dict(peer, **dict.fromkeys(_PEER_SUMS, 0)))
            for k in _PEER_SUMS:
                m[k] += peer.get(k, 0)
            for when, what in _PEER_LATEST:
                if (peer.get(when) or 0) > (m.get(when) or 0):
                    m[when], m[what] = peer[when], peer.get(what, "")
    return list(merged.values())


def _merge_reloads(answers: list[dict]) -> dict:
    reloads = [a.get("reloads", {}) for a in answers]
    latest = max(reloads, key=lambda r: r.get("last_time") or 0)
    failed = [r for r in reloads if r.get("last_result") == "failed"]
    return {
        "ok": sum(r.get("ok", 0) for r in reloads),
        "failed": sum(r.get("failed", 0) for r in reloads),
        "last_result": "failed" if failed else latest.get("last_result"),
        "last_error": failed[0].get("last_error", "") if failed else latest.get("last_error", ""),
        "last_time": latest.get("last_time"),
    }


def _merge_audit(answers: list[dict]) -> dict:
    audits = [a.get("audit", {}) for a in answers]
    return {
        "transport": audits[0].get("transport"),
        "queued": sum(x.get("queued", 0) for x in audits),
        "sent": sum(x.get("sent", 0) for x in audits),
        "dropped": sum(x.get("dropped", 0) for x in audits),
        "connected": all(x.get("connected") for x in audits),
        "last_error": next((x["last_error"] for x in audits if x.get("last_error")), ""),
    }
