"""What the request path tells a request's trace: the hooks, and where the trace is found.

Tracing is optional (``aichat.operations.trace_setup`` decides); its implementation
(``aichat.operations.trace_spans``) imports OpenTelemetry. The request path imports only
this module, so a gateway that does not trace imports nothing of OpenTelemetry and pays one
absent-key lookup per request: ``request.get(REQUEST_TRACE)`` is None, and every hook below
is skipped. The hooks, in a request's order:

1. the server span starts when the request arrives (the tracing middleware);
2. ``RequestTrace.attempt`` before each upstream attempt (retries and fallbacks included):
   from then until ``AttemptTrace.started`` or ``AttemptTrace.failed``, upstream HTTP
   requests in this task carry the attempt's context;
3. ``AttemptTrace.started`` with the first event, then ``AttemptTrace.see`` for each later
   one (``AttemptTrace.traced`` wraps an event stream to do that, and ``failed`` / ``end``);
4. ``RequestTrace.usage`` once the tokens are known, ``RequestTrace.cost`` once priced,
   ``RequestTrace.dropped`` for parameters the upstream will not honour;
5. the server span ends once the response is sent (the middleware).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from aiohttp import web

from aichat.core.schemas import ChatCompletionRequest
from aichat.providers.base import Event, EventStream, Provider, Usage


class AttemptTrace(Protocol):
    """The span of one upstream attempt."""

    def started(self, first: Event) -> None:
        """The upstream's first event arrived: this attempt answers the request."""
        ...

    def see(self, event: Event) -> None:
        """A later event of the answer, as it passes."""
        ...

    def failed(self, exc: BaseException) -> None:
        """The attempt ended with ``exc``, before its first event or mid-answer; ends it."""
        ...

    def end(self) -> None:
        """The answer is closed, complete or not; ends the span (once)."""
        ...

    def traced(self, events: EventStream) -> EventStream:
        """``events`` (the rest of the answer), seen by this span, which fails with them or
        ends when they are closed."""
        ...


class Upstream(Protocol):
    """Where an attempt goes, as a span names it (``aichat.answer.routing.Target`` is one)."""

    @property
    def name(self) -> str:
        """The route's name."""
        ...

    @property
    def provider(self) -> Provider:
        """The provider serving it."""
        ...

    @property
    def upstream_model(self) -> str:
        """The model asked of the upstream."""
        ...

    @property
    def label(self) -> str:
        """How logs name it: route and provider."""
        ...


class RequestTrace(Protocol):
    """The server span of one API request, parent of its attempts' spans."""

    def attempt(self, upstream: Upstream, number: int, chat: ChatCompletionRequest) -> AttemptTrace:
        """The span of attempt ``number`` (from 1) to send ``chat`` to ``upstream``, started
        before its request."""
        ...

    def usage(self, usage: Usage) -> None:
        """The answer's token counts, for the attempt that answered."""
        ...

    def cost(self, usd: float) -> None:
        """What the answer cost, in US dollars, once priced."""
        ...

    def dropped(self, params: Iterable[str]) -> None:
        """Request parameters the answering upstream does not honour."""
        ...


# The trace of the request being answered; absent when tracing is off.
REQUEST_TRACE: web.RequestKey[RequestTrace] = web.RequestKey("trace")
