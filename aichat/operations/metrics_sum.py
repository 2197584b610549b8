"""The gateway's metrics as one process would show them: the workers' samples added up.

Decisions:

- A worker's samples travel as plain JSON (``snapshot``): per family its name, type, help,
  unit and ``[sample name, labels, value]`` rows, exactly what its registry would render.
- Counters, histograms and gauges of amounts (open streams, connections) are summed per
  sample and label set. Creation times (``_created``) take the earliest. What every worker
  counts or states alike takes the highest value instead: a circuit's state (shared by all;
  the highest is the worst any worker reports) and configuration reloads (one SIGHUP reloads
  every worker: one reload, not N). The highest of counters never goes down either. The
  event loop's lag takes the highest too, being each worker's own: two workers 0.3 s late
  are not 0.6 s late, and the latest one is what sheds requests
  (``aichat.operations.loop_lag``).
- ``aichat_worker_up{worker}`` is the only per-worker series: 1 when the worker's samples are
  from this scrape, 0 when they are the last it sent (it did not answer in time).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from aichat.operations.link import Link

Family = list[Any]  # [name, type, help, unit, [[sample name, labels, value], ...]]

_UP_HELP = (
    "1 for a worker whose metrics are from this scrape, 0 for one that did not answer in time "
    "(its last metrics are counted)."
)
_HIGHEST = frozenset(
    {"aichat_circuit_state", "aichat_config_reloads", "aichat_event_loop_lag_seconds"}
)

SNAPSHOT_TIMEOUT = 2.0  # seconds a scrape waits for a worker's samples before using its last
SCRAPE_TIMEOUT = SNAPSHOT_TIMEOUT + 2.0  # seconds a worker waits for the supervisor's answer


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


def _combine(family: str, sample: str, old: float, new: float) -> float:
    if sample.endswith("_created"):
        return min(old, new)
    if family in _HIGHEST:
        return max(old, new)
    return old + new


def summed(workers: list[tuple[str, bool, list[Family]]]) -> list[Family]:
    """The families of ``workers`` (``(worker, answered now, families)``) added up, and
    ``aichat_worker_up``."""
    families: dict[str, Family] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for _, _, samples in workers:
        for name, kind, documentation, unit, rows in samples:
            families.setdefault(name, [name, kind, documentation, unit, []])
            sums = values.setdefault(name, {})
            for sample, labels, value in rows:
                key = (sample, tuple(sorted(labels.items())))
                old = sums.get(key)
                sums[key] = value if old is None else _combine(name, sample, old, value)
    for name, family in families.items():
        family[4] = [
            [sample, dict(labels), value] for (sample, labels), value in values[name].items()
        ]
    up = [
        ["aichat_worker_up", {"worker": worker}, 1 if fresh else 0] for worker, fresh, _ in workers
    ]
    return [*families.values(), ["aichat_worker_up", "gauge", _UP_HELP, "", up]]


class _Families(Collector):
    def __init__(self, families: list[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for name, kind, documentation, unit, rows in self._families:
            family = Metric(name, documentation, kind, unit)
            for sample, labels, value in rows:
                family.add_sample(sample, labels, value)
            yield family


def text(families: list[Family]) -> bytes:
    """``families`` in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


async def gateway_metrics(link: Link) -> list[Family]:
    """The whole gateway's metrics, every worker's added up by the supervisor."""
    families: list[Family] = await link.ask("metrics", seconds=SCRAPE_TIMEOUT)
    return families
