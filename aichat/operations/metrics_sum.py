"""The gateway's metrics as one process would show them: the workers' samples added up.

Decisions:

- A worker's samples travel as plain JSON (``snapshot``): per family its name, type, help,
  unit and ``[sample name, labels, value]`` rows, exactly what its registry would render.
- Counters, histograms and gauges of amounts (open streams, connections) are summed per
  sample and label set. Creation times (``_created``) take the earliest. A gauge that states
  something every worker knows alike (a circuit's state, shared by all) takes the highest,
  the worst state any worker reports, rather than a sum no one could read.
- ``aichat_worker_up{worker}`` is the only per-worker series: 1 when the worker's samples are
  from this scrape, 0 when they are the last it sent (it did not answer in time).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Family = list[Any]  # [name, type, help, unit, [[sample name, labels, value], ...]]

_HIGHEST = frozenset({"aichat_circuit_state"})


def snapshot(registry: CollectorRegistry) -> list[Family]:
    """Every family of ``registry`` as JSON-ready lists."""
    return [
        [
            family.name,
            family.type,
            family.documentation,
            family.unit,
            [[sample.name, sample.labels, sample.value] for sample in family.samples],
        ]
        for family in registry.collect()
    ]


def _combine(family: str, kind: str, sample: str, old: float, new: float) -> float:
    if sample.endswith("_created"):
        return min(old, new)
    if kind == "gauge" and family in _HIGHEST:
        return max(old, new)
    return old + new


class _Summed(Collector):
    def __init__(self, workers: list[tuple[str, bool, list[Family]]]) -> None:
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for _, _, samples in self._workers:
            for name, kind, documentation, unit, rows in samples:
                families.setdefault(name, Metric(name, documentation, kind, unit))
                sums = values.setdefault(name, {})
                for sample, labels, value in rows:
                    key = (sample, tuple(sorted(labels.items())))
                    old = sums.get(key)
                    sums[key] = value if old is None else _combine(name, kind, sample, old, value)
        for name, family in families.items():
            for (sample, labels), value in values[name].items():
                family.add_sample(sample, dict(labels), value)
            yield family
        up = GaugeMetricFamily(
            "aichat_worker_up",
            "1 for a worker whose metrics are from this scrape, 0 for one that did not "
            "answer in time (its last metrics are counted).",
            labels=["worker"],
        )
        for worker, fresh, _ in self._workers:
            up.add_metric([worker], 1 if fresh else 0)
        yield up


def summed_text(workers: list[tuple[str, bool, list[Family]]]) -> bytes:
    """The workers' samples added up, in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Summed(workers))
    return generate_latest(registry)
