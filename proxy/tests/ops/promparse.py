"""Scrapes read with the reference parser (prometheus_client.parser), indexed by sample name."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def parse(text: str) -> dict[str, dict]:
    """{sample name: {"type": ..., "help": ..., "samples": {frozenset(labels): value}}}; raises
    ValueError on what the reference parser refuses, a missing final newline or a duplicate."""
    if not text.endswith("\n"):
        raise ValueError("exposition must end with a newline")
    families: dict[str, dict] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            entry = families.setdefault(
                sample.name, {"type": fam.type, "help": fam.documentation, "samples": {}}
            )
            key = frozenset(sample.labels.items())
            if key in entry["samples"]:
                raise ValueError(f"duplicate sample {sample.name}{sample.labels}")
            entry["samples"][key] = sample.value
    return families


def value(families: dict, name: str, **labels) -> float:
    return families[name]["samples"][frozenset(labels.items())]


def total(families: dict, name: str, **labels) -> float:
    """Sum over samples whose labels include `labels`."""
    want = set(labels.items())
    samples = families.get(name, {"samples": {}})["samples"]  # a family without samples: 0
    return sum(v for k, v in samples.items() if want <= set(k))
