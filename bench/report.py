"""Medians, ratios and the printed table (pure functions, no I/O)."""

import statistics

# metric -> (label, True if higher is better)
METRICS = {
    "bulk_MBps": ("bulk, 1 connection (MB/s)", True),
    "parallel_MBps": ("8 parallel connections (MB/s)", True),
    "conn_per_s": ("connections/s, full handshake", True),
    "cpu_ms_per_conn": ("CPU ms per connection, both sides", False),
    "rtt_p50_us": ("1 KB round trip p50 (µs)", False),
    "rtt_p99_us": ("1 KB round trip p99 (µs)", False),
    "rtt_p50_over_direct_us": ("p50 overhead over direct (µs)", False),
    "rtt_p99_over_direct_us": ("p99 overhead over direct (µs)", False),
    "cpu_us_per_rtt": ("CPU µs per round trip, both sides", False),
    "rss_idle_MiB": ("RSS, both sides, idle conns (MiB)", False),
    "rss_per_conn_KiB": ("RSS per idle connection (KiB)", False),
    "cpu_s_per_GB": ("CPU s per GB, both sides", False),
    "conn_per_s_resumed": ("connections/s, resumed sessions", True),
    "cpu_ms_per_conn_resumed": ("CPU ms per connection, resumed", False),
}
RESUMED = ("conn_per_s_resumed", "cpu_ms_per_conn_resumed")
# marks a resumed-session figure whose client side was not shown to resume (see the notes)
UNPROVEN = "*"
CONTENDER_ORDER = ("direct", "stunnel", "haproxy", "medtls", "medtls-base")
RATIOS = (("medtls", "stunnel"), ("medtls", "haproxy"), ("medtls", "medtls-base"))


def summarize(runs: dict[str, dict[str, list[float]]], kind: str, cipher: str) -> dict:
    """runs[contender][metric] = values of each run -> medians, overheads and ratios."""
    metrics: dict[str, dict[str, dict]] = {}
    for contender, per_metric in runs.items():
        for metric, values in per_metric.items():
            metrics.setdefault(metric, {})[contender] = {
                "median": statistics.median(values),
                "runs": [round(v, 3) for v in values],
            }
    for base in ("rtt_p50_us", "rtt_p99_us"):
        direct = metrics.get(base, {}).get("direct")
        if not direct:
            continue
        over = base.replace("_us", "_over_direct_us")
        for contender, m in metrics[base].items():
            if contender != "direct":
                metrics.setdefault(over, {})[contender] = {"median": m["median"] - direct["median"]}
    ratios: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, list[float]]] = {}
    for metric, per in metrics.items():
        for a, b in RATIOS:
            if a in per and b in per and per[b]["median"]:
                ratios.setdefault(metric, {})[f"{a}/{b}"] = per[a]["median"] / per[b]["median"]
                paired = paired_ratios(runs[a].get(metric, []), runs[b].get(metric, []))
                if paired:
                    spread.setdefault(metric, {})[f"{a}/{b}"] = [min(paired), max(paired)]
    return {"key": kind, "cipher": cipher, "metrics": metrics, "ratios": ratios, "spread": spread}


def paired_ratios(a: list[float], b: list[float]) -> list[float]:
    """a[i]/b[i] of each run: two contenders measured minutes apart in the same run see the
    same machine, so the range of these shows how far the noise moves the ratio. Empty for a
    single run, or when a contender lacks a run (the pairs would no longer match)."""
    if len(a) < 2 or len(a) != len(b) or not all(b):
        return []
    return [x / y for x, y in zip(a, b, strict=True)]


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


SPREAD_NOTE = (
    "Ratios are ratios of the medians; in brackets, the lowest and the highest ratio of the two "
    "contenders' results within one run (paired runs, same machine state)."
)


def _ratio_cell(ratio: float | None, spread: list[float] | None) -> str:
    if ratio is None or not spread:
        return _fmt(ratio)
    return f"{_fmt(ratio)} ({_fmt(spread[0])}-{_fmt(spread[1])})"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"medtls bench, {result['date']}, mode {result['mode']}, "
        f"{result['sizes']['runs']} run(s), median; {m['cpu']}, {m['cores']} cores, "
        f"kernel {m['kernel']}, {m['openssl']}, Python {m['python']}, "
        f"load average {' '.join(m['loadavg_start'])} at start, "
        f"{' '.join(m.get('loadavg_end', ['?']))} at end; {result.get('duration_s', '?')} s",
        "",
        "versions: " + "; ".join(f"{k}: {v}" for k, v in result["versions"].items()),
        "",
    ]
    for name, scen in result["scenarios"].items():
        present = [c for c in CONTENDER_ORDER if any(c in v for v in scen["metrics"].values())]
        ratio_cols = [f"{a}/{b}" for a, b in RATIOS if a in present and b in present]
        lines.append(f"### {name} (TLS 1.3, {scen['key']} certificates, {scen['cipher']})")
        lines.append("")
        lines.append("| metric | better | " + " | ".join(present + ratio_cols) + " |")
        lines.append("|---|---|" + "---:|" * (len(present) + len(ratio_cols)))
        checked = result["checks"].get(name, {})
        unproven = unproven_resumption(checked, present)
        for metric, (label, higher) in METRICS.items():
            per = scen["metrics"].get(metric)
            if not per:
                continue
            cells = [
                _fmt(per[c]["median"]) + (UNPROVEN if metric in RESUMED and c in unproven else "")
                if c in per
                else "-"
                for c in present
            ]
            ratios = scen["ratios"].get(metric, {})
            spread = scen.get("spread", {}).get(metric, {})
            cells += [_ratio_cell(ratios.get(col), spread.get(col)) for col in ratio_cols]
            arrow = "higher" if higher else "lower"
            lines.append(f"| {label} | {arrow} | " + " | ".join(cells) + " |")
        lines.append("")
        if scen.get("spread"):
            lines += [SPREAD_NOTE, ""]
        if any(m in scen["metrics"] for m in RESUMED):
            lines += resumption_notes(checked, present)
    if result["skipped"]:
        lines.append("skipped: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items()))
    for err in result["errors"]:
        lines.append(f"error: {err}")
    return "\n".join(lines) + "\n"


def _resumption(entry: dict) -> dict:
    return entry.get("resume_config", {}).get("resumption", {})


def unproven_resumption(checked: dict, present: list[str]) -> list[str]:
    """Contenders whose resumption configuration's client side or pair was not seen resuming."""
    return [
        c
        for c in present
        if (found := _resumption(checked.get(c, {})))
        and (found.get("client_side") != "Reused" or found.get("pair") != "Reused")
    ]


def resumption_notes(checked: dict, present: list[str]) -> list[str]:
    """What the probes showed about each contender's two configurations."""
    parts = []
    for c in present:
        found = _resumption(checked.get(c, {}))
        if found:
            parts.append(
                f"{c}: server side {found['server_side']}, client side {found['client_side']} "
                f"({found.get('client_side_connections', '?')}), "
                f"pair {found.get('pair', '?')} ({found.get('pair_connections', '?')})"
            )
    if not parts:
        return []
    lines = [
        "Resumption, probed on the resume configuration (bench/checks.py): server side = "
        "`openssl s_client -sess_out`, then `-sess_in`; client side = 3 connections to "
        "`openssl s_server -www`; pair = pre_shared_key in both TLS hellos between the two "
        "sides, per connection. " + "; ".join(parts) + "."
    ]
    full = [c for c in present if checked.get(c, {}).get("resumption")]
    if full and all(
        checked[c]["resumption"]["server_side"] == checked[c]["resumption"]["client_side"] == "New"
        for c in full
    ):
        lines.append(
            f"Full-handshake configuration (every other metric): New on the server and the "
            f"client side ({', '.join(full)})."
        )
    unproven = unproven_resumption(checked, present)
    if unproven:
        lines.append(
            f"{UNPROVEN} client side or pair not seen resuming ({', '.join(unproven)}): "
            "those resumed figures may be full handshakes."
        )
    return [*lines, ""]


def validate(result: dict, scenarios: list[str], contenders: list[str]) -> list[str]:
    """What is missing or wrong in a run; empty when every contender produced every metric."""
    bad = list(result["errors"])
    for scen in scenarios:
        metrics = result["scenarios"].get(scen, {}).get("metrics", {})
        if not metrics:
            bad.append(f"{scen}: no metrics")
            continue
        for metric, per in metrics.items():
            if metric.endswith("_over_direct_us"):
                continue
            for c in contenders:
                if c == "direct" and (metric.startswith(("rss_", "cpu_")) or metric in RESUMED):
                    continue
                v = per.get(c, {}).get("median")
                if v is None or (v <= 0 and metric != "rss_per_conn_KiB"):
                    bad.append(f"{scen}/{c}: {metric} missing or not positive ({v})")
        checked = result["checks"].get(scen, {})
        for c in contenders:
            if c == "direct":
                continue
            if c not in checked:
                bad.append(f"{scen}/{c}: security checks did not run")
            elif c in metrics.get(RESUMED[0], {}) and "resume_config" not in checked[c]:
                bad.append(f"{scen}/{c}: resumption checks did not run")
    return bad
