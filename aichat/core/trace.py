"""What the request path may tell a request's trace, with no tracing library in sight.

Tracing is optional (``aichat.operations.trace_setup`` decides); its spans
(``aichat.operations.trace_spans``) import OpenTelemetry. The layers below them see only
these protocols: an ``Exchange`` has a ``RequestTrace`` when its request is traced (else
None, and the request path skips every hook), and an upstream request reads ``OUTBOUND``.
Decisions:

- **Here, in core**, because the ``Exchange`` carries the trace and every layer may read an
  ``Exchange``. So nothing here names a provider's types (an attempt's events are ``object``
  to these protocols, and the trace sorts them out), nor a ``Prompt``, whose module imports
  the ``Exchange``'s through ``aichat.core.errors``: ``Asked`` is what a span reads of one.
- **Few hooks**, each one call: the trace of a request starts with it and ends once it is
  answered (the tracing middleware); ``RequestTrace.attempt`` makes the span of each upstream
  attempt (``aichat.operations.tracing.traced`` wraps the attempt's events with it);
  ``RequestTrace.dropped`` names the parameters the answering upstream will not get.
  Everything else (key, route, usage, cost, errors, timings) is read from the ``Exchange``
  once the request has been answered, where the layers have noted it already.
- **Context goes upstream through a context variable** (``OUTBOUND``), set only while an
  attempt's first event is awaited (for an unsampled request, which has no ``RequestTrace``,
  while it is answered): a provider's HTTP request
  (``aichat.providers.http.upstream_body``) adds its headers (W3C ``traceparent``) and says
  where it went. Untraced, that costs one ``ContextVar.get`` per upstream request.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class Outbound:
    """What the upstream attempt being traced adds to its HTTP request, and learns from it."""

    headers: dict[str, str]
    url: str | None = None  # where the request went, once sent


OUTBOUND: ContextVar[Outbound | None] = ContextVar("aichat_outbound", default=None)


class Speaking(Protocol):
    """The provider an attempt goes to, as its span names it."""

    @property
    def name(self) -> str:
        """The provider's name (``openai``, ``anthropic``, ...)."""
        ...

    @property
    def api(self) -> str:
        """The API its upstream speaks (``chat``, ``messages``, ``responses``)."""
        ...


class Upstream(Protocol):
    """Where an attempt goes (``aichat.answer.routing.Target`` is one)."""

    @property
    def name(self) -> str:
        """The route's name."""
        ...

    @property
    def provider(self) -> Speaking:
        """The provider serving it."""
        ...

    @property
    def upstream_model(self) -> str:
        """The model asked of the upstream."""
        ...


class Asked(Protocol):
    """What a span reads of a request (``aichat.core.prompt.Prompt`` is one)."""

    @property
    def api(self) -> str:
        """The API the client spoke."""
        ...

    @property
    def stream(self) -> bool:
        """Whether it asked for a stream."""
        ...

    @property
    def body(self) -> Mapping[str, Any]:
        """Its JSON body, as the client sent it."""
        ...

    @property
    def max_tokens(self) -> int | None:
        """The answer's token limit, if it set one."""
        ...

    def chat(self) -> Any:
        """Its Chat Completions form (a ``ChatCompletionRequest``, which is out of reach
        here); may raise ``APIError`` for a request that has none."""
        ...


class AttemptTrace(Protocol):
    """The span of one upstream attempt, from its request to the end of its answer."""

    @property
    def outbound(self) -> Outbound:
        """What its upstream request carries (``OUTBOUND`` while it is sent)."""
        ...

    def started(self, first: object) -> None:
        """The upstream's first event arrived: this attempt answers the request."""
        ...

    def see(self, event: object) -> None:
        """A later event of the answer, as it passes."""
        ...

    def failed(self, exc: BaseException) -> None:
        """The attempt ended with ``exc``, before its first event or mid-answer; ends it."""
        ...

    def end(self) -> None:
        """The answer is closed, complete or not; ends the span (once)."""
        ...


class RequestTrace(Protocol):
    """The trace of one API request: its server span, parent of its attempts' spans."""

    def attempt(self, upstream: Upstream, number: int, prompt: Asked) -> AttemptTrace:
        """The span of attempt ``number`` (from 1) to send ``prompt`` to ``upstream``."""
        ...

    def dropped(self, params: list[str]) -> None:
        """Request parameters the answering upstream does not get."""
        ...
