"""Prometheus metrics: ``GET /metrics``, optionally behind its own key.

Each application has its own registry (tests run several apps in one process). Counters
that other modules already keep (rate-limit rejections, circuit states) are read at scrape
time rather than mirrored on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aichat.core.errors import AuthenticationError
from aichat.operations.auth import FAILED_KEYS, key_matches, presented_key

# Latency buckets in seconds, from a cached answer to a long generation.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


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


class Metrics:
    """The gateway's metrics, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aichat_requests",
            "API requests answered, by model, status and the upstream that answered.",
            ["model", "status", "upstream"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "aichat_request_duration_seconds",
            "Whole request time, until the last byte of a stream.",
            ["model"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.first_token = Histogram(
            "aichat_time_to_first_token_seconds",
            "From the first upstream attempt to the first answer event, retries included.",
            ["model"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        # A plain number, read at scrape time: streams open and close on the hot path.
        self.open_streams = 0
        self.registry.register(_OpenStreams(self))
        self.upstream_errors = Counter(
            "aichat_upstream_errors",
            "Failed upstream attempts, by upstream and error code.",
            ["upstream", "code"],
            registry=self.registry,
        )
        self.retries = Counter(
            "aichat_upstream_retries",
            "Retries of the same upstream.",
            ["upstream"],
            registry=self.registry,
        )
        # Labelled children by label values: ``labels()`` validates and locks on every call.
        self._answered: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._first_token: dict[str, Any] = {}

    def watch(
        self,
        rejections: Callable[[], dict[str, int]],
        circuits: Callable[[], dict[str, str]],
        failed_keys: Callable[[], int],
    ) -> None:
        """Report rate-limit rejections, circuit states and failed keys kept elsewhere."""
        self.registry.register(_Snapshot(rejections, circuits, failed_keys))

    def observe_request(self, status: int, fields: dict[str, Any], seconds: float) -> None:
        """Record one finished API request from its access-log fields.

        The model label is the routed name, never what a client typed: unknown names would
        make the label set grow without bound.
        """
        model = fields.get("route") or "-"
        key = (model, str(status), fields.get("upstream") or "-")
        children = self._answered.get(key)
        if children is None:
            children = self._answered[key] = (
                self.requests.labels(*key),
                self.duration.labels(model),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_first_token(self, model: str, seconds: float) -> None:
        """Record the time from the first upstream attempt to the first answer event."""
        child = self._first_token.get(model)
        if child is None:
            child = self._first_token[model] = self.first_token.labels(model)
        child.observe(seconds)


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
    """``GET /metrics`` in Prometheus' text format."""
    require_metrics_key(request)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
