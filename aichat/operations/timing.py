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
from typing import Protocol

from aiohttp import web

from aichat.core.exchange import Exchange
from aichat.providers.base import Event, EventStream, ends_answer

SERVER_TIMING_HEADER = "Server-Timing"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _dur(seconds: float) -> str:
    # Formatted once: rounding a float, then writing its shortest form, costs nearly 3x more.
    return f"{seconds * 1000:.2f}"


def server_timing(exchange: Exchange, now: float) -> str:
    """The ``Server-Timing`` value of ``exchange`` as known at ``now``."""
    called, done = exchange.upstream_called, exchange.upstream_done
    if called is None:
        return f"gw;dur={_dur(now - exchange.arrived)}"
    value = f"gw-pre;dur={_dur(called - exchange.arrived)}"
    if done is not None:
        value += f", upstream;dur={_dur(done - called)}, gw-post;dur={_dur(now - done)}"
    return value


def overhead_fields(exchange: Exchange, now: float) -> dict[str, float]:
    """The gateway's own time around a stream's upstream, for its access-log line."""
    called, done = exchange.upstream_called, exchange.upstream_done
    if called is None or done is None:
        return {}
    return {"gw_pre_ms": _ms(called - exchange.arrived), "gw_post_ms": _ms(now - done)}


def add_server_timing(exchange: Exchange, response: web.StreamResponse) -> None:
    """The ``Server-Timing`` header, on every response, streamed or whole."""
    response.headers[SERVER_TIMING_HEADER] = server_timing(exchange, time.perf_counter())


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

    __slots__ = ("_events", "_exchange", "_watcher")

    def __init__(
        self,
        first: Event,
        events: EventStream,
        exchange: Exchange,
        watcher: Watcher | None = None,
    ) -> None:
        self._events = events
        self._exchange = exchange
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
        exchange = self._exchange
        if exchange.upstream_done is None:
            exchange.upstream_done = time.perf_counter()
