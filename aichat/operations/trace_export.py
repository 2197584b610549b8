"""Sending finished spans to an OTLP/HTTP receiver, off the event loop, never at a request's cost.

Imported only when tracing is on (``aichat.operations.trace_setup``). Decisions:

- **The OpenTelemetry SDK and its OTLP/HTTP exporter** do what they are good at: spans,
  ids, the sampler (``OTEL_TRACES_SAMPLER``), the resource (``OTEL_SERVICE_NAME``,
  ``OTEL_RESOURCE_ATTRIBUTES``), attribute limits, and the exporter's endpoint, headers,
  TLS, compression, timeout and retries (``OTEL_EXPORTER_OTLP_*``), all read from the
  environment by the SDK itself.
- **Batches, a bounded queue, drops counted.** ``SpanBatches`` stands in for the SDK's
  ``BatchSpanProcessor``, with the same variables (``OTEL_BSP_MAX_QUEUE_SIZE``,
  ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``) and defaults, because the
  SDK's processor counts what it drops only through an OpenTelemetry meter, behind a flag: here
  a span ended on the event loop costs one append to a bounded deque, a full queue drops the
  span and counts it, and a thread of this process exports batches. A receiver that is down
  or slow blocks that thread only (the exporter's own timeout and retries), never a request;
  its batches are counted as failed exports. Both counts are Prometheus metrics
  (``aichat_trace_spans_dropped_total{reason}``).
- **One provider per application, started with it.** Each application (each worker of
  ``aichat serve --workers``: they fork before any application exists) builds its own
  provider and export thread when it starts, and flushes and stops them when it stops,
  within a bounded time. Nothing is registered globally: several applications in one
  process (tests) keep their own.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Iterator

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import PROCESS_PID, SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from aichat import __version__

log = logging.getLogger("aichat.tracing")

# The OpenTelemetry specification's defaults for the batch span processor.
_QUEUE, _DELAY_MS, _BATCH = 2048, 5000, 512
# How long stopping waits for the last batch (a receiver that is down would hold it for the
# exporter's whole timeout and retries).
_STOP_WAIT_S = 5.0


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("%s=%r is not a positive integer; using %d", name, raw, default)
        return default
    return value


class SpanBatches(SpanProcessor):
    """Finished, sampled spans queued (bounded) and exported in batches by a thread.

    ``on_end`` runs on the event loop: it appends, or counts a drop when the queue is full.
    The thread wakes every ``OTEL_BSP_SCHEDULE_DELAY`` ms, or as soon as a batch is full.
    """

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter
        self._max_queue = _positive_int("OTEL_BSP_MAX_QUEUE_SIZE", _QUEUE)
        self._batch = min(_positive_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _BATCH), self._max_queue)
        self._delay = _positive_int("OTEL_BSP_SCHEDULE_DELAY", _DELAY_MS) / 1000
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self.dropped = {"queue_full": 0, "export_failed": 0}
        self.exported = 0
        self._thread = threading.Thread(target=self._run, name="aichat-span-export", daemon=True)
        self._thread.start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a finished span (the event loop's only cost), or count it dropped."""
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if self._stopping:
            return
        if len(self._queue) >= self._max_queue:
            self.dropped["queue_full"] += 1
            return
        self._queue.append(span)
        if len(self._queue) >= self._batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._export_all()
        self._export_all()

    def _export_all(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            try:
                result = self._exporter.export(batch)
            except Exception:  # an exporter bug must not end the thread
                log.exception("exporting spans failed")
                result = SpanExportResult.FAILURE
            if result is SpanExportResult.SUCCESS:
                self.exported += len(batch)
            else:
                self.dropped["export_failed"] += len(batch)

    def shutdown(self) -> None:
        """Export what is queued (waiting at most a few seconds), then stop the exporter."""
        self._stopping = True
        self._wake.set()
        self._thread.join(_STOP_WAIT_S)
        # Interrupts the exporter's retries if the last batch is still being tried.
        self._exporter.shutdown()


class _ExportCounts(Collector):
    """The processor's counts, read at scrape time."""

    def __init__(self, batches: SpanBatches) -> None:
        self._batches = batches

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "aichat_trace_spans_dropped",
            "Finished spans not delivered to the trace receiver: queue_full (the export "
            "queue was full) or export_failed (the receiver refused them or could not be "
            "reached in time).",
            labels=["reason"],
        )
        for reason, count in self._batches.dropped.items():
            dropped.add_metric([reason], count)
        yield dropped
        yield CounterMetricFamily(
            "aichat_trace_spans_exported",
            "Finished spans the trace receiver accepted.",
            value=self._batches.exported,
        )


def _resource() -> Resource:
    # The environment's OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES win; aichat otherwise.
    # The process id tells the workers of ``aichat serve --workers`` apart.
    resource = Resource.create({SERVICE_VERSION: __version__, PROCESS_PID: os.getpid()})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "aichat"}))
    return resource


class Export:
    """A tracer provider exporting to the configured OTLP/HTTP endpoint, and its counts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.batches = SpanBatches(OTLPSpanExporter())
        self.provider = TracerProvider(resource=_resource())
        self.provider.add_span_processor(self.batches)
        self._counts = _ExportCounts(self.batches)
        self._registry = registry
        registry.register(self._counts)

    def tracer(self) -> Tracer:
        """The tracer aichat's spans come from."""
        return self.provider.get_tracer("aichat", __version__)

    def stop(self) -> None:
        """Flush and stop exporting (blocks up to a few seconds: run it off the event loop)."""
        self._registry.unregister(self._counts)
        self.provider.shutdown()
