"""A strict parser for the Prometheus text format 0.0.4 (independent of the code under test)."""

from __future__ import annotations

import re

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf"^({NAME})(\{{(.*)\}})? (\S+)( -?\d+)?$")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), text)


def parse(text: str) -> dict[str, dict]:
    """{metric: {"type": ..., "help": ..., "samples": {frozenset(labels): value}}}."""
    if not text.endswith("\n"):
        raise ValueError("exposition must end with a newline")
    families: dict[str, dict] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, kind, name, *rest = line.split(" ", 3)
            fam = families.setdefault(name, {"type": None, "help": None, "samples": {}})
            value = rest[0] if rest else ""
            if kind == "TYPE":
                if fam["samples"]:
                    raise ValueError(f"line {n}: TYPE after samples of {name}")
                if value not in ("counter", "gauge", "histogram", "summary", "untyped"):
                    raise ValueError(f"line {n}: bad type {value}")
                fam["type"] = value
            else:
                fam["help"] = value
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise ValueError(f"line {n}: not a sample: {line!r}")
        name, _, label_text, value = m.group(1), m.group(2), m.group(3), m.group(4)
        labels = {}
        if label_text:
            pos = 0
            while pos < len(label_text):
                lm = LABEL.match(label_text, pos)
                if not lm:
                    raise ValueError(f"line {n}: bad labels {label_text!r}")
                labels[lm.group(1)] = _unescape(lm.group(2))
                pos = lm.end()
        fam = families.get(name)
        if fam is None or fam["type"] is None:
            raise ValueError(f"line {n}: sample {name} without TYPE")
        key = frozenset(labels.items())
        if key in fam["samples"]:
            raise ValueError(f"line {n}: duplicate sample {line!r}")
        fam["samples"][key] = float(value)
    return families


def value(families: dict, name: str, **labels) -> float:
    return families[name]["samples"][frozenset(labels.items())]


def total(families: dict, name: str, **labels) -> float:
    """Sum over samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for k, v in families[name]["samples"].items() if want <= set(k))
