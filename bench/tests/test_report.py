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
