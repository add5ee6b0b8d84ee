"""The harness' pure parts: medians, overheads, ratios, validation and the table."""

from bench import report


def _runs():
    return {
        "direct": {"rtt_p50_us": [30.0, 32.0, 31.0], "bulk_MBps": [1000.0, 900.0, 950.0]},
        "haproxy": {"rtt_p50_us": [130.0], "bulk_MBps": [400.0], "cpu_s_per_GB": [2.0]},
        "stunnel": {"rtt_p50_us": [140.0], "bulk_MBps": [300.0], "cpu_s_per_GB": [2.5]},
        "medtls": {
            "rtt_p50_us": [200.0, 100.0, 150.0],
            "bulk_MBps": [600.0],
            "cpu_s_per_GB": [1.0],
        },
    }


def test_medians_overheads_and_ratios():
    s = report.summarize(_runs(), "ecdsa", "aes256gcm")
    assert s["metrics"]["rtt_p50_us"]["medtls"]["median"] == 150.0
    assert s["metrics"]["rtt_p50_over_direct_us"]["medtls"]["median"] == 150.0 - 31.0
    assert "direct" not in s["metrics"]["rtt_p50_over_direct_us"]
    assert s["ratios"]["bulk_MBps"] == {"medtls/stunnel": 2.0, "medtls/haproxy": 1.5}
    assert s["ratios"]["cpu_s_per_GB"]["medtls/haproxy"] == 0.5


def _result(scen):
    return {
        "date": "d", "mode": "smoke", "sizes": {"runs": 1}, "duration_s": 1,
        "machine": {"cpu": "x", "cores": 2, "kernel": "k", "openssl": "o", "python": "p",
                    "loadavg_start": ["0", "0", "0"]},
        "versions": {}, "skipped": {}, "errors": [],
        "checks": {"s": {"haproxy": {}, "stunnel": {}, "medtls": {}}},
        "scenarios": {"s": scen},
    }  # fmt: skip


def test_validate_accepts_complete_and_names_what_is_missing():
    scen = report.summarize(_runs(), "ecdsa", "aes256gcm")
    names = ["direct", "stunnel", "haproxy", "medtls"]
    assert report.validate(_result(scen), ["s"], names) == []
    runs = _runs()
    del runs["medtls"]["cpu_s_per_GB"]
    res = _result(report.summarize(runs, "ecdsa", "aes256gcm"))
    del res["checks"]["s"]["stunnel"]
    bad = report.validate(res, ["s"], names)
    assert "s/medtls: cpu_s_per_GB missing or not positive (None)" in bad
    assert "s/stunnel: security checks did not run" in bad


def test_table_has_a_row_per_metric_and_ratio_columns():
    text = report.markdown(_result(report.summarize(_runs(), "ecdsa", "aes256gcm")))
    header = next(line for line in text.splitlines() if line.startswith("| metric"))
    assert header.endswith("| medtls/stunnel | medtls/haproxy |")
    bulk = next(line for line in text.splitlines() if line.startswith("| bulk"))
    assert bulk.split("|")[-3:-1] == [" 2.00 ", " 1.50 "]


def _resumed_result(client_side="Reused"):
    runs = _runs()
    for c, cps in (("stunnel", 500.0), ("haproxy", 800.0), ("medtls", 600.0)):
        runs[c]["conn_per_s_resumed"] = [cps]
        runs[c]["cpu_ms_per_conn_resumed"] = [2.0]
    res = _result(report.summarize(runs, "ecdsa", "aes256gcm"))
    for c in ("stunnel", "haproxy", "medtls"):
        found = {
            "server_side": "Reused",
            "client_side": "Reused",
            "pair": "Reused",
            "client_side_connections": "New,Reused",
            "pair_connections": "New,Reused",
        }
        if c == "haproxy":
            found = {**found, "client_side": client_side}
        new = {k: "New" for k in ("server_side", "client_side", "pair")}
        res["checks"]["s"][c] = {"resumption": new, "resume_config": {"resumption": found}}
    return res


def test_resumed_rows_and_how_resumption_was_proven():
    lines = report.markdown(_resumed_result()).splitlines()
    row = next(line for line in lines if line.startswith("| connections/s, resumed"))
    assert row.split("|")[3:7] == [" - ", " 500 ", " 800 ", " 600 "]
    assert row.split("|")[-3:-1] == [" 1.20 ", " 0.75 "]
    assert any(line.startswith("| CPU ms per connection, resumed | lower |") for line in lines)
    notes = "\n".join(lines)
    assert "haproxy: server side Reused, client side Reused (New,Reused), pair Reused" in notes
    assert (
        "(every other metric): New on the server and the client side (stunnel, haproxy, medtls)"
        in notes
    )
    assert "not seen resuming" not in notes


def test_unproven_client_side_is_marked_not_hidden():
    lines = report.markdown(_resumed_result(client_side="New")).splitlines()
    row = next(line for line in lines if line.startswith("| connections/s, resumed"))
    assert row.split("|")[5] == " 800* "
    assert row.split("|")[4] == " 500 "
    assert any("* client side or pair not seen resuming (haproxy)" in line for line in lines)


def test_validate_wants_the_resumption_checks():
    res = _resumed_result()
    names = ["direct", "stunnel", "haproxy", "medtls"]
    assert report.validate(res, ["s"], names) == []
    del res["checks"]["s"]["medtls"]["resume_config"]
    assert report.validate(res, ["s"], names) == ["s/medtls: resumption checks did not run"]


def test_paired_ratio_range_shows_the_noise_of_one_run():
    runs = _runs()
    runs["haproxy"]["rtt_p50_us"] = [100.0, 125.0, 150.0]
    s = report.summarize(runs, "ecdsa", "aes256gcm")
    # medtls 200/100/150 against haproxy 100/125/150 within each run
    assert s["spread"]["rtt_p50_us"]["medtls/haproxy"] == [0.8, 2.0]
    assert "medtls/stunnel" not in s["spread"]["rtt_p50_us"]  # stunnel ran once: no pairs
    text = report.markdown(_result(s))
    row = next(line for line in text.splitlines() if line.startswith("| 1 KB round trip p50"))
    assert row.split("|")[-2] == " 1.20 (0.80-2.00) "
    assert report.SPREAD_NOTE in text


def test_no_pairs_when_a_contender_missed_a_run():
    assert report.paired_ratios([1.0, 2.0, 3.0], [1.0, 2.0]) == []
    assert report.paired_ratios([1.0], [2.0]) == []
    assert report.paired_ratios([1.0, 3.0], [2.0, 3.0]) == [0.5, 1.0]
