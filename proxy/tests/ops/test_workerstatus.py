"""Merging the workers' answers into the service's (sans-io)."""

from __future__ import annotations

from medtls.ops import health
from medtls.ops.workerstatus import merge_reload, merge_status


def _answer(pid, active, total, peer_total, last_success, ready=True, **extra):
    return {
        "ok": True, "pid": pid, "ready": ready, "draining": False, "generation": 2,
        "listeners": [{"name": "svc", "direction": "inbound", "address": "127.0.0.1:2762"}],
        "connections": {"active": active, "total": total},
        "peers": [{"name": "pacs", "direction": "outbound", "active": active, "total": peer_total,
                   "last_success": last_success, "last_success_identity": f"CN=pacs-{pid}",
                   "last_failure": None, "last_failure_reason": ""}],
        "reloads": {"ok": 1, "failed": 0, "last_result": "ok", "last_error": "",
                    "last_time": last_success},
        "audit": {"transport": "tls", "queued": 1, "sent": 5, "dropped": 0, "connected": True,
                  "last_error": ""},
        "certificate_problems": [], "snapshot": {"connections": {"total": active}},
        **extra,
    }  # fmt: skip


def test_counts_add_up_and_the_newest_event_wins():
    merged = merge_status([_answer(11, 2, 10, 7, 100.0), _answer(12, 1, 5, 4, 200.0)], 10, 1.0)
    assert merged["pid"] == 10 and merged["ready"] is True
    assert merged["connections"] == {"active": 3, "total": 15}
    (pacs,) = merged["peers"]
    assert (pacs["active"], pacs["total"]) == (3, 11)
    assert (pacs["last_success"], pacs["last_success_identity"]) == (200.0, "CN=pacs-12")
    assert merged["audit"]["sent"] == 10 and merged["audit"]["queued"] == 2
    assert merged["reloads"]["ok"] == 2
    assert "snapshot" not in merged  # one worker's view is not the service's
    assert health.evaluate(merged, now=300.0)[0] == health.OK


def test_a_silent_or_unready_worker_makes_the_service_critical():
    merged = merge_status(
        [_answer(11, 0, 0, 0, 1.0), {"ok": False, "error": "no answer within 5s"}], 10, 1.0
    )
    assert merged["ready"] is False
    level, problems = health.evaluate(merged, now=2.0)
    assert level == health.CRITICAL
    assert (health.CRITICAL, "worker 1 does not answer: no answer within 5s") in problems
    merged = merge_status([_answer(11, 0, 0, 0, 1.0), _answer(12, 0, 0, 0, 1.0, ready=False)],
                          10, 1.0)  # fmt: skip
    assert (health.CRITICAL, "worker 1 (pid 12) is not ready") in health.evaluate(merged, 2.0)[1]
    assert merge_status([{"ok": False, "error": "x"}], 10, 1.0) == {
        "ok": False, "error": "no worker answered (worker 0: x)"}  # fmt: skip


def test_reload_is_ok_only_when_every_worker_took_it():
    assert merge_reload([{"ok": True, "generation": 3}, {"ok": True, "generation": 3}]) == {
        "ok": True, "generation": 3}  # fmt: skip
    assert merge_reload([{"ok": True, "generation": 3}, {"ok": False, "error": "bad key"}]) == {
        "ok": False, "error": "worker 1: bad key"}  # fmt: skip
