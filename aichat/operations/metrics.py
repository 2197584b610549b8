"""Prometheus metrics: ``GET /metrics``, optionally behind its own key.

Each application has its own registry (tests run several apps in one process). Counters
that other modules already keep (rate-limit rejections, circuit states) are read at scrape
time rather than mirrored on the hot path. What every request records (its count, duration
and time to first token) is kept as plain numbers and turned into metrics at scrape time
too: prometheus_client's own types lock and loop over their buckets on every observation,
which only pays off with threads, and the gateway has one event loop.

Every label value comes from the configuration (model, upstream and key names; a discovered
model counts under its discovery route) or from a fixed set (statuses, error codes, limits,
kinds), never from what a client or an upstream sends: anything else is ``other``. A label
set that grows with input would grow ``/metrics`` and memory without bound.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from http import HTTPStatus
from itertools import accumulate
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from aichat.core.errors import APIError, AuthenticationError
from aichat.operations.auth import FAILED_KEYS, key_matches, presented_key
from aichat.operations.link import WORKER_LINK
from aichat.operations.metrics_sum import gateway_metrics, text
from aichat.operations.redis_pool import StoreBusy, StoreUnavailable

# Latency buckets in seconds, from a cached answer to a long generation.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
OTHER = "other"  # the label value of anything outside the configured or fixed set
_STATUSES = frozenset(str(status.value) for status in HTTPStatus)
# Upstream error codes counted by name: the gateway's own and those OpenAI documents.
UPSTREAM_CODES = frozenset(
    {
        "upstream_error",
        "upstream_timeout",
        "upstream_unavailable",
        "rate_limit_exceeded",
        "insufficient_quota",
        "server_error",
        "server_overloaded",
        "context_length_exceeded",
        "model_not_found",
        "invalid_api_key",
        "invalid_request_error",
    }
)


class _Snapshot(Collector):
    """Reads counters kept elsewhere, at scrape time."""

    def __init__(
        self,
        rejections: Callable[[], dict[str, int]],
        circuits: Callable[[], dict[str, str]],
        failed_keys: Callable[[], int],
    ) -> None:
        self._rejections = rejections
        self._circuits = circuits
        self._failed_keys = failed_keys

    def collect(self) -> Iterator[Metric]:
        rejected = CounterMetricFamily(
            "aichat_rate_limit_rejections", "Requests refused by a limit.", labels=["limit"]
        )
        for limit, count in self._rejections().items():
            rejected.add_metric([limit], count)
        yield rejected
        circuit = GaugeMetricFamily(
            "aichat_circuit_state",
            "Upstream circuit: 0 closed, 1 half-open (trial), 2 open.",
            labels=["upstream"],
        )
        for upstream, state in self._circuits().items():
            circuit.add_metric([upstream], CIRCUIT_STATES[state])
        yield circuit
        yield CounterMetricFamily(
            "aichat_auth_failures",
            "Requests refused for a missing or wrong key (API or metrics key).",
            value=self._failed_keys(),
        )


class LabelledCounts(Collector):
    """A counter by label values, kept as plain numbers until a scrape."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = labels
        self._counts: dict[tuple[str, ...], float] = {}

    def add(self, values: tuple[str, ...], amount: float = 1) -> None:
        """Count ``amount`` more for the label ``values`` (in the order of the labels)."""
        self._counts[values] = self._counts.get(values, 0) + amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for values, count in self._counts.items():
            family.add_metric(values, count)
        yield family


class _Histogram(Collector):
    """A histogram by model: per model, a count per bucket (the last one +Inf), then the sum."""

    def __init__(self, name: str, documentation: str) -> None:
        self._name = name
        self._documentation = documentation
        self._by_model: dict[str, list[float]] = {}

    def observe(self, model: str, seconds: float) -> None:
        """Count ``seconds`` for ``model``."""
        counts = self._by_model.get(model)
        if counts is None:
            counts = self._by_model[model] = [0] * (len(_BUCKETS) + 2)
        counts[bisect_left(_BUCKETS, seconds)] += 1  # the first bucket it is <= to
        counts[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=["model"])
        bounds = [*map(floatToGoString, _BUCKETS), "+Inf"]
        for model, counts in self._by_model.items():
            cumulative = accumulate(counts[:-1])
            family.add_metric([model], list(zip(bounds, cumulative, strict=True)), counts[-1])
        yield family


class Metrics:
    """The gateway's metrics, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = LabelledCounts(
            "aichat_requests",
            "API requests answered, by model, status and the upstream that answered.",
            ("model", "status", "upstream"),
        )
        self._duration = _Histogram(
            "aichat_request_duration_seconds",
            "Whole request time, until the last byte of a stream.",
        )
        self._first_token = _Histogram(
            "aichat_time_to_first_token_seconds",
            "From the first upstream attempt to the first answer event, retries included.",
        )
        for collector in (self._requests, self._duration, self._first_token):
            self.registry.register(collector)
        # A plain number, read at scrape time: streams open and close on the hot path.
        self.open_streams = 0
        self.registry.register(_OpenStreams(self))
        self._upstream_errors = Counter(
            "aichat_upstream_errors",
            "Failed upstream attempts, by upstream and error code (codes outside a fixed set "
            "are 'other').",
            ["upstream", "code"],
            registry=self.registry,
        )
        self._names: Callable[[], Mapping[str, str]] = dict
        self.retries = Counter(
            "aichat_upstream_retries",
            "Retries of the same upstream.",
            ["upstream"],
            registry=self.registry,
        )

    def watch(
        self,
        rejections: Callable[[], dict[str, int]],
        circuits: Callable[[], dict[str, str]],
        failed_keys: Callable[[], int],
        names: Callable[[], Mapping[str, str]],
    ) -> None:
        """Report rate-limit rejections, circuit states and failed keys kept elsewhere;
        ``names`` maps the routed names and upstream labels of the access log to labels."""
        self.registry.register(_Snapshot(rejections, circuits, failed_keys))
        self._names = names

    def _name(self, logged: Any) -> str:
        return "-" if not logged else self._names().get(logged, OTHER)

    def observe_request(self, status: int, fields: dict[str, Any], seconds: float) -> None:
        """Record one finished API request from its access-log fields.

        The model label is the routed name, never what a client typed: unknown names would
        make the label set grow without bound.
        """
        model = self._name(fields.get("route"))
        code = str(status)
        self._requests.add(
            (model, code if code in _STATUSES else OTHER, self._name(fields.get("upstream")))
        )
        self._duration.observe(model, seconds)

    def upstream_error(self, upstream: str, code: str | None) -> None:
        """Count one failed attempt of ``upstream`` (a metric label already)."""
        label = "-" if code is None else code if code in UPSTREAM_CODES else OTHER
        self._upstream_errors.labels(upstream, label).inc()

    def observe_first_token(self, model: str, seconds: float) -> None:
        """Record the time from the first upstream attempt to the first answer event."""
        self._first_token.observe(model, seconds)


class _OpenStreams(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "aichat_open_streams", "Streams being written now.", value=self._metrics.open_streams
        )


METRICS = web.AppKey("metrics", Metrics)
METRICS_KEY = web.AppKey("metrics_key", str)


def require_metrics_key(request: web.Request) -> None:
    """401 unless the request presents ``AICHAT_METRICS_KEY`` (when one is set)."""
    required = request.app.get(METRICS_KEY)
    if required is not None and not key_matches(presented_key(request), required):
        request.app[FAILED_KEYS].record(request.remote)
        raise AuthenticationError("Incorrect or missing metrics key.")


async def metrics_endpoint(request: web.Request) -> web.Response:
    """``GET /metrics`` in Prometheus' text format: with ``--workers``, every worker's
    metrics added up (``aichat.operations.shared``)."""
    require_metrics_key(request)
    link = request.app.get(WORKER_LINK)
    if link is None:
        body = generate_latest(request.app[METRICS].registry)
    else:
        try:
            body = text(await gateway_metrics(link))
        except (StoreUnavailable, StoreBusy) as exc:
            # One worker's counts shown as the gateway's would read as counter resets.
            raise APIError(
                f"The other workers' metrics are unavailable ({exc}); try again.",
                status=503,
                code="metrics_unavailable",
                headers={"Retry-After": "1"},
            ) from None
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
