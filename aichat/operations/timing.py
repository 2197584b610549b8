"""``Server-Timing``: what the gateway itself costs each request.

Three figures, in milliseconds: ``gw-pre`` from the request's arrival until the upstream is
called (parsing, auth, routing), ``upstream`` from that call until the upstream's last event
(retries and fallbacks included), and ``gw-post`` from that last event until the answer is
sent. A whole answer's header carries all three. A stream's headers leave before the upstream
has finished, so they carry ``gw-pre`` only; the access-log line gets ``gw_pre_ms`` and
``gw_post_ms`` once the stream has ended. Requests that call no upstream get ``gw``: all of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from aichat.providers.base import Event, EventStream, ends_answer

SERVER_TIMING_HEADER = "Server-Timing"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _dur(seconds: float) -> str:
    # Formatted once: rounding a float, then writing its shortest form, costs nearly 3x more.
    return f"{seconds * 1000:.2f}"


@dataclass(slots=True)
class Timing:
    """When a request arrived, called its upstream, and saw the upstream's last event."""

    arrived: float
    upstream_called: float | None = None
    upstream_done: float | None = None

    def header(self, now: float) -> str:
        """The ``Server-Timing`` value as known at ``now``."""
        if self.upstream_called is None:
            return f"gw;dur={_dur(now - self.arrived)}"
        value = f"gw-pre;dur={_dur(self.upstream_called - self.arrived)}"
        if self.upstream_done is not None:
            value += (
                f", upstream;dur={_dur(self.upstream_done - self.upstream_called)}"
                f", gw-post;dur={_dur(now - self.upstream_done)}"
            )
        return value


TIMING = web.RequestKey("timing", Timing)


def overhead_fields(timing: Timing, now: float) -> dict[str, float]:
    """The gateway's own time around a stream's upstream, for its access-log line."""
    if timing.upstream_called is None or timing.upstream_done is None:
        return {}
    return {
        "gw_pre_ms": _ms(timing.upstream_called - timing.arrived),
        "gw_post_ms": _ms(now - timing.upstream_done),
    }


def add_server_timing(request: web.Request, response: web.StreamResponse) -> None:
    """The ``Server-Timing`` header, on every response, streamed or whole."""
    timing = request.get(TIMING)
    if timing is not None:
        response.headers[SERVER_TIMING_HEADER] = timing.header(time.perf_counter())


def upstream_called(request: web.Request) -> None:
    """Mark the moment the gateway hands the request to its upstream."""
    timing = request.get(TIMING)
    if timing is not None:
        timing.upstream_called = time.perf_counter()


class Watcher(Protocol):
    """Something else that sees every event of an answer (``aichat.answer.usage.Meter``)."""

    def see(self, event: Event) -> None:
        """One event, as it passes."""
        ...

    def close(self) -> None:
        """The answer is over (complete or not); must not await."""
        ...


class Timed:
    """An answer's events, marking the upstream done at its last event or wherever they stop.

    An iterator class rather than a generator: closing it closes the provider's events even
    when it was never read (an answer complete in its first event), which closing a
    generator that never started would not. A ``watcher`` sees each event here rather than
    through an iterator of its own: one layer less on every event of every stream.
    """

    __slots__ = ("_events", "_timing", "_watcher")

    def __init__(
        self,
        first: Event,
        events: EventStream,
        request: web.Request,
        watcher: Watcher | None = None,
    ) -> None:
        self._events = events
        self._timing = request.get(TIMING)
        self._watcher = watcher
        if watcher is not None:
            watcher.see(first)
        if ends_answer(first):
            self._done()

    def __aiter__(self) -> Timed:
        return self

    async def __anext__(self) -> Event:
        try:
            event = await self._events.__anext__()
        except BaseException:
            self._done()
            raise
        if self._watcher is not None:
            self._watcher.see(event)
        if ends_answer(event):
            self._done()
        return event

    async def aclose(self) -> None:
        """Close the provider's events (releasing its upstream connection), whatever happens."""
        self._done()
        watcher, self._watcher = self._watcher, None
        try:
            if watcher is not None:
                watcher.close()
        finally:
            await self._events.aclose()

    def _done(self) -> None:
        timing = self._timing
        if timing is not None and timing.upstream_done is None:
            timing.upstream_done = time.perf_counter()
