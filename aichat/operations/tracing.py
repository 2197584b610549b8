"""An upstream attempt's events, seen by the attempt's span when its request is traced.

The answer path's one hook into an attempt (``aichat.answer.failover``) is ``traced``: it
hands back the provider's events as they are when the request is not traced (one call and a
``None`` test per attempt), and otherwise wraps them in ``TracedEvents``, which tells the
attempt's span (``aichat.core.trace.AttemptTrace``) each event, a failure, and the end. No
OpenTelemetry here: that is ``aichat.operations.trace_spans``, loaded only when tracing is on.
"""

from __future__ import annotations

from aichat.core.prompt import Prompt
from aichat.core.trace import OUTBOUND, AttemptTrace, RequestTrace, Upstream
from aichat.providers.base import Event, EventStream


class TracedEvents:
    """An attempt's events, seen by its span, which ends when they fail or are closed.

    While the first event is awaited (the provider sends its HTTP request then), the
    attempt's context is ``OUTBOUND``, set and reset here, in one frame.
    """

    __slots__ = ("_attempt", "_events", "_started")

    def __init__(self, events: EventStream, attempt: AttemptTrace) -> None:
        self._events = events
        self._attempt = attempt
        self._started = False

    def __aiter__(self) -> TracedEvents:
        return self

    async def __anext__(self) -> Event:
        attempt = self._attempt
        token = None if self._started else OUTBOUND.set(attempt.outbound)
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            attempt.failed(exc)
            raise
        finally:
            if token is not None:
                OUTBOUND.reset(token)
        if self._started:
            attempt.see(event)
        else:
            self._started = True
            attempt.started(event)
        return event

    async def aclose(self) -> None:
        """Close the events (the answer's usage is recorded by then), then end the span."""
        try:
            await self._events.aclose()
        finally:
            self._attempt.end()


def traced(
    trace: RequestTrace | None, upstream: Upstream, number: int, prompt: Prompt, events: EventStream
) -> EventStream:
    """``events``, attempt ``number`` to send ``prompt`` to ``upstream``, seen by its own span
    when the request is traced (``trace``)."""
    if trace is None:
        return events
    return TracedEvents(events, trace.attempt(upstream, number, prompt))
