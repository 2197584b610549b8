"""How far behind the event loop runs, and shedding new requests while it is too far.

A process that gets less CPU than its traffic needs (a busy host, a CPU quota) runs every
callback late. Left alone, it keeps taking requests, every one gets slower, and upstream
reads are handled after their timeouts have fired: requests in flight time out, the
upstream's circuit opens, and next to nothing completes (a soak on a loaded machine completed
3 of 7,186 requests while its upstream had served 681 answers). Better to refuse some
requests at once and finish the others.

Decisions:

- The signal is the loop's own lateness, not the CPU's: a timer due every ``SAMPLE`` seconds
  notes how late it runs, which is how late every read, write and timeout of the process is
  handled, whatever the cause (too little CPU, too much work per request, a blocking call).
- Smoothed over about a second (``SMOOTHING``, weighted by time, so that a starved loop that
  samples rarely still follows within a sample or two): one slow callback, a garbage
  collection or a large request, costs nobody an answer; lateness that lasts does.
- While the smoothed lag is over ``AICHAT_MAX_LOOP_LAG`` (0.5 s; 0 turns shedding off), API
  requests that would start upstream work get 503 ``server_overloaded`` with ``Retry-After``
  before anything else is done for them: not counted against the key's rate, their bodies
  unread. Requests already admitted go on, and with fewer newcomers the lag comes down.
  ``/health``, ``/ready``, ``/metrics`` and model listings are never shed.
- Once the loop keeps up again, requests are not let in all at once: clients refused at the
  same moment come back at the same moment, and a crowd admitted together would put the loop
  behind again, timing out what it admitted. The number in flight when the loop fell behind,
  less a quarter, is a ceiling that rises by a tenth each sample while the loop keeps up (as
  TCP opens its window again after a loss) and is dropped once far above what is in flight.
- A request is never shed while nothing else is in flight: a loop too late even while idle
  still serves one request at a time rather than none.
- The lag is a gauge, ``aichat_event_loop_lag_seconds``; sheddings count in
  ``aichat_rate_limit_rejections_total{limit="event_loop"}``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Iterator

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aichat.operations.lifecycle import LIFECYCLE
from aichat.operations.metrics import METRICS

SAMPLE = 0.1  # seconds between two looks at the loop
SMOOTHING = 1.0  # seconds: the time constant of the moving average


class LoopLag:
    """The event loop's smoothed lateness, and whether a new request may start now.

    ``in_flight`` counts the requests being served, for the ceiling of the module's
    docstring.
    """

    __slots__ = ("_ceiling", "_due", "_handle", "_in_flight", "_loop", "lag", "limit")

    def __init__(self, limit: float, in_flight: Callable[[], int]) -> None:
        self.limit = limit
        self.lag = 0.0  # seconds, smoothed
        self._in_flight = in_flight
        self._ceiling = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        """Start sampling on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._schedule(self._loop.time())

    def stop(self) -> None:
        """Stop sampling."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + SAMPLE
        self._handle = self._loop.call_at(self._due, self._sample)

    def _sample(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        late = max(0.0, now - self._due)
        weight = 1.0 - math.exp(-(SAMPLE + late) / SMOOTHING)
        self.lag += weight * (late - self.lag)
        if self.behind():
            self._ceiling = max(1, min(self._ceiling, self._in_flight() * 3 // 4))
        elif self._ceiling < math.inf:
            self._ceiling += max(1, self._ceiling // 10)
            if self._ceiling > 2 * self._in_flight() + 10:
                self._ceiling = math.inf
        self._schedule(now)

    def behind(self) -> bool:
        """Whether the loop lags more than ``limit`` (if set)."""
        return 0 < self.limit < self.lag

    def admits(self) -> bool:
        """Whether a new request may start: the loop keeps up, and fewer are in flight than
        it last could not keep up with; or nothing else is in flight."""
        in_flight = self._in_flight()  # this request included
        if self.limit == 0 or in_flight <= 1:
            return True  # alone, it costs the loop little, and a loop late even while idle
        return not self.behind() and in_flight <= self._ceiling  # still serves someone


LOOP_LAG = web.AppKey("loop_lag", LoopLag)


class _LagGauge(Collector):
    def __init__(self, lag: LoopLag) -> None:
        self._lag = lag

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "aichat_event_loop_lag_seconds",
            "How late the event loop runs, smoothed over about a second.",
            value=self._lag.lag,
        )


def watch_loop_lag(app: web.Application, limit: float) -> None:
    """Sample the loop into ``app[LOOP_LAG]`` while ``app`` runs, its gauge in ``/metrics``."""
    lifecycle = app[LIFECYCLE]
    lag = app[LOOP_LAG] = LoopLag(limit, lambda: len(lifecycle.inflight))
    app[METRICS].registry.register(_LagGauge(lag))

    async def sampling(_: web.Application) -> AsyncIterator[None]:
        lag.start()
        yield
        lag.stop()

    app.cleanup_ctx.append(sampling)
