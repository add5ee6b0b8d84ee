"""A small thread-safe metrics registry rendered in the Prometheus text format 0.0.4."""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def format_sample(name: str, labels: dict[str, str], value: float) -> str:
    if labels:
        inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {format_value(value)}"
    return f"{name} {format_value(value)}"


class Metric:
    def __init__(self, name: str, kind: str, help_text: str, labelnames: tuple[str, ...]):
        self.name = name
        self.kind = kind
        self.help = help_text
        self.labelnames = labelnames
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        try:
            if len(labels) == len(self.labelnames):
                return tuple([str(labels[n]) for n in self.labelnames])
        except KeyError:
            pass
        raise ValueError(f"{self.name}: labels {sorted(labels)} != {list(self.labelnames)}")

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if self.kind == "counter" and amount < 0:
            raise ValueError(f"{self.name}: counters only go up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        if self.kind != "gauge":
            raise ValueError(f"{self.name}: only gauges go down")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) - amount

    def labels(self, **labels: str) -> tuple[str, ...]:
        """The key of one label set, for `add` (validated once, reused per event)."""
        return self._key(labels)

    def add(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        """`inc`/`dec` by a key from `labels` (hot path: no keyword dict per event)."""
        if amount < 0 and self.kind == "counter":
            raise ValueError(f"{self.name}: counters only go up")
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def get(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def samples(self) -> list[tuple[dict[str, str], float]]:
        with self._lock:
            items = sorted(self._values.items())
        return [(dict(zip(self.labelnames, k, strict=True)), v) for k, v in items]

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples():
            yield format_sample(self.name, labels, value)


def format_bound(bound: float) -> str:
    """An `le` label as Prometheus clients write it (0.005, 1.0, +Inf): the same series
    name whichever exporter a dashboard aggregates."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class Histogram:
    """Observations counted into fixed buckets, rendered as _bucket{le}, _sum and _count.

    `observe` costs a bisect over the bounds and three additions; the cumulative counts
    Prometheus wants are summed only when rendered."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labelnames: tuple[str, ...], buckets: Iterable[float]
    ):
        bounds = tuple(float(b) for b in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)) or math.isinf(bounds[-1]):
            raise ValueError(f"{name}: buckets must be increasing and finite")
        if "le" in labelnames:
            raise ValueError(f"{name}: 'le' is the bucket label")
        self.name = name
        self.help = help_text
        self.labelnames = labelnames
        self.bounds = bounds
        # per label key: [count in each bucket..., count above the last bound, sum]
        self._values: dict[tuple[str, ...], list[float]] = {}
        self._lock = threading.Lock()

    def labels(self, **labels: str) -> tuple[str, ...]:
        """The key of one label set, for `observe`; the series starts at 0 from now on."""
        try:
            if len(labels) == len(self.labelnames):
                key = tuple([str(labels[n]) for n in self.labelnames])
                with self._lock:
                    self._values.setdefault(key, [0] * (len(self.bounds) + 1) + [0.0])
                return key
        except KeyError:
            pass
        raise ValueError(f"{self.name}: labels {sorted(labels)} != {list(self.labelnames)}")

    def observe(self, key: tuple[str, ...], value: float) -> None:
        """Count `value` (a bucket's bound is inclusive: le = less or equal)."""
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            row = self._values[key]
            row[i] += 1
            row[-1] += value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {escape_help(self.help)}"
        yield f"# TYPE {self.name} histogram"
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._values.items())
        les = [format_bound(b) for b in (*self.bounds, math.inf)]
        for key, row in items:
            labels = dict(zip(self.labelnames, key, strict=True))
            cumulative = 0
            for le, n in zip(les, row[:-1], strict=True):
                cumulative += n
                yield format_sample(f"{self.name}_bucket", {**labels, "le": le}, cumulative)
            yield format_sample(f"{self.name}_sum", labels, row[-1])
            yield format_sample(f"{self.name}_count", labels, cumulative)


class Registry:
    def __init__(self):
        self._metrics: dict[str, Metric | Histogram] = {}
        self._collectors: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def _add(self, name, kind, help_text, labelnames, buckets=()) -> Metric:
        with self._lock:
            if name in self._metrics:
                raise ValueError(f"metric {name} registered twice")
            if kind == "histogram":
                metric = Histogram(name, help_text, tuple(labelnames), buckets)
            else:
                metric = Metric(name, kind, help_text, tuple(labelnames))
            self._metrics[name] = metric
            return metric

    def counter(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> Metric:
        return self._add(name, "counter", help_text, labelnames)

    def gauge(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> Metric:
        return self._add(name, "gauge", help_text, labelnames)

    def histogram(
        self, name: str, help_text: str, labelnames: Iterable[str], buckets: Iterable[float]
    ) -> Histogram:
        return self._add(name, "histogram", help_text, labelnames, buckets)

    def on_collect(self, fn: Callable[[], None]) -> None:
        """fn refreshes computed gauges right before each scrape."""
        self._collectors.append(fn)

    def render(self) -> str:
        for fn in self._collectors:
            fn()
        lines: list[str] = []
        with self._lock:
            metrics = list(self._metrics.values())
        for metric in metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
