"""The spans of one API request: a server span, and a client span per upstream attempt.

Imported only when tracing is on (``aichat.operations.tracing``). Decisions:

- **GenAI semantic conventions** (OpenTelemetry's ``gen_ai.*``, development status, as
  published in 2026) on each upstream attempt: a ``CLIENT`` span named
  ``chat {upstream model}`` with ``gen_ai.operation.name`` (``chat``: Chat Completions,
  Responses and Messages alike), ``gen_ai.provider.name`` (the route's provider: ``openai``
  for any OpenAI-compatible upstream, ``aichats``, ``mock``), ``gen_ai.request.*`` as sent,
  ``gen_ai.response.model`` / ``id`` / ``finish_reasons``, ``gen_ai.response.time_to_first_chunk``
  (streams), ``gen_ai.usage.*`` (input tokens include the cached ones, which are also given
  apart), ``server.address`` / ``server.port`` of the request actually sent, and ``error.type``
  (the upstream's HTTP status, ``upstream_timeout``, ``cancelled``, ...) for an attempt that
  failed. The conventions' one span per logical call would hide retries and fallbacks: here
  each attempt is its own span, numbered (``aichat.attempt``).
- **The server span** (``SERVER``, HTTP conventions: ``POST /v1/chat/completions``) carries
  aichat's own attributes: ``aichat.key.name`` (the key's name, never the key),
  ``aichat.route``, ``aichat.request.model`` (as the client asked), ``aichat.upstream``,
  ``aichat.attempts``, ``aichat.dropped_params``, ``aichat.time_to_first_token`` (first
  attempt to first event, retries included, as the metric), ``aichat.cost.usd`` when priced,
  ``aichat.request.id`` (the access line's). No ``gen_ai.*`` there, so tools that add up token
  counts over a trace count each answer once.
- **Context**: a client's ``traceparent`` (or whatever ``OTEL_PROPAGATORS`` names) parents
  the server span; each attempt's own context goes upstream in its HTTP request, through
  ``aichat.providers.http.OUTBOUND``. Spans are parented explicitly: nothing is made
  "current", so no context variable is touched per event.
- **Cheap per event**: a pass-through answer's finish reasons are found with a regular
  expression over its chunks (quotes inside JSON strings are escaped, so only keys match),
  and its response model and id in its first chunk only.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextvars import Token
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer, set_span_in_context
from yarl import URL

from aichat.core.context import LOG_FIELDS, REQUEST_ID, Handler
from aichat.core.errors import APIError, UpstreamError
from aichat.core.schemas import ChatCompletionRequest
from aichat.operations.metrics import METRICS
from aichat.operations.trace_content import Output, input_messages
from aichat.operations.trace_export import Export
from aichat.operations.tracing import REQUEST_TRACE, Upstream
from aichat.providers.base import Event, EventStream, Finish, RawChunks, RawCompletion, Usage
from aichat.providers.http import OUTBOUND, Outbound

_FINISH_REASON = re.compile(r'"finish_reason"\s*:\s*"([^"\\]{1,64})"')
_MODEL = re.compile(r'"model"\s*:\s*"([^"\\]{1,256})"')
_ID = re.compile(r'"id"\s*:\s*"([^"\\]{1,256})"')
# Access-log fields that become server span attributes.
_FIELDS = (
    ("key", "aichat.key.name"),
    ("route", "aichat.route"),
    ("model", "aichat.request.model"),
    ("upstream", "aichat.upstream"),
    ("attempts", "aichat.attempts"),
    ("error", "aichat.error"),
)


def _error_type(exc: BaseException) -> str:
    """``error.type``: low in cardinality, as the conventions ask."""
    if isinstance(exc, UpstreamError) and exc.upstream_status is not None:
        return str(exc.upstream_status)
    if isinstance(exc, APIError):
        return exc.code or type(exc).__name__
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return type(exc).__qualname__


def _request_attributes(chat: ChatCompletionRequest) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    max_tokens = chat.max_completion_tokens or chat.max_tokens
    if max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = max_tokens
    if chat.temperature is not None:
        attributes["gen_ai.request.temperature"] = chat.temperature
    if chat.top_p is not None:
        attributes["gen_ai.request.top_p"] = chat.top_p
    if chat.n is not None and chat.n != 1:
        attributes["gen_ai.request.choice.count"] = chat.n
    if chat.stop:
        attributes["gen_ai.request.stop_sequences"] = (
            [chat.stop] if isinstance(chat.stop, str) else chat.stop
        )
    if chat.stream:
        attributes["gen_ai.request.stream"] = True
    return attributes


class AttemptTrace:
    """The client span of one upstream attempt, from its request to the end of its answer.

    Made by ``RequestTrace.attempt``; from then until ``started`` or ``failed``, upstream
    requests made in this task carry the span's context. Then ``see`` each later event, and
    ``end`` when the answer is closed (``TracedEvents`` does both).
    """

    __slots__ = (
        "_complete",
        "_finish",
        "_model_seen",
        "_outbound",
        "_output",
        "_request",
        "_span",
        "_started",
        "_stream",
        "_token",
    )

    def __init__(
        self,
        request: RequestTrace,
        span: Span,
        chat: ChatCompletionRequest,
        capture: bool,
    ) -> None:
        self._request = request
        self._span = span
        self._stream = chat.stream
        self._started = time.perf_counter()
        self._finish: list[str] = []  # finish reasons found in pass-through chunks
        self._model_seen = False
        self._output = Output() if capture else None
        if capture:
            span.set_attribute("gen_ai.input.messages", input_messages(chat))
        headers: dict[str, str] = {}
        propagate.inject(headers, context=set_span_in_context(span))
        self._outbound = Outbound(headers)
        self._token: Token[Outbound | None] | None = OUTBOUND.set(self._outbound)
        # Whether the answer is complete (the provider's finish reason), else None.
        self._complete: str | None = None

    def _stop_propagating(self) -> None:
        token, self._token = self._token, None
        if token is None:
            return
        OUTBOUND.reset(token)
        url = self._outbound.url
        if url is not None:
            parsed = URL(url)
            if parsed.host:
                self._span.set_attribute("server.address", parsed.host)
            if parsed.port:
                self._span.set_attribute("server.port", parsed.port)

    def started(self, first: Event) -> None:
        """The upstream's first event arrived: this attempt answers the request."""
        self._stop_propagating()
        seconds = time.perf_counter() - self._started
        if self._stream:
            self._span.set_attribute("gen_ai.response.time_to_first_chunk", seconds)
        self._request.answered_by(self)
        self.see(first)

    def see(self, event: Event) -> None:
        """One event of the answer, as it passes."""
        if isinstance(event, RawChunks):
            if not self._model_seen and event.jsons:
                self._first_json(event.jsons[0])
            for text in event.jsons:
                if "finish_reason" in text:
                    self._finish.extend(_FINISH_REASON.findall(text))
        elif isinstance(event, RawCompletion):
            self._first_json(event.json)
            self._finish.extend(_FINISH_REASON.findall(event.json))
        if isinstance(event, Finish):
            self._complete = event.reason
        elif isinstance(event, RawChunks) and event.last:  # only Finish follows, unread
            self._complete = "stop"
        if self._output is not None:
            self._output.see(event)

    def _first_json(self, text: str) -> None:
        self._model_seen = True
        model, response_id = _MODEL.search(text), _ID.search(text)
        if model is not None:
            self._span.set_attribute("gen_ai.response.model", model[1])
        if response_id is not None:
            self._span.set_attribute("gen_ai.response.id", response_id[1])

    def usage(self, usage: Usage) -> None:
        """The answer's token counts (reported by the upstream, or counted by aichat)."""
        span = self._span
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if usage.cache_read_tokens:
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cache_read_tokens)
        if usage.cache_write_tokens:
            span.set_attribute("gen_ai.usage.cache_write.input_tokens", usage.cache_write_tokens)

    def traced(self, events: EventStream) -> TracedEvents:
        """``events`` (the rest of this attempt's answer), seen by this span, which ends
        when they are closed."""
        return TracedEvents(events, self)

    def failed(self, exc: BaseException) -> None:
        """The attempt ended with ``exc``, before its first event or in the middle of it."""
        self._stop_propagating()
        if not self._span.is_recording():
            return
        error = _error_type(exc)
        self._span.set_attribute("error.type", error)
        if not isinstance(exc, asyncio.CancelledError):  # the client left: no fault here
            cause = exc.cause if isinstance(exc, UpstreamError) else type(exc).__name__
            self._span.set_status(StatusCode.ERROR, cause)
            self._request.broke_off(self, error)
        self._end(["error"])

    def end(self) -> None:
        """The answer is closed: complete if the provider said so, else cut short."""
        if not self._span.is_recording():
            return
        if self._complete is None:
            self._end(["error"])
        else:
            self._end(self._finish or [self._complete])

    def _end(self, reasons: list[str]) -> None:
        self._span.set_attribute("gen_ai.response.finish_reasons", reasons)
        if self._output is not None:
            self._span.set_attribute("gen_ai.output.messages", self._output.messages(reasons[0]))
        self._span.end()


class RequestTrace:
    """The server span of one API request, and the parent of its attempts' spans."""

    __slots__ = ("_answering", "_capture", "_context", "_error", "_first_try", "_span", "_tracer")

    def __init__(self, tracer: Tracer, request: web.Request, capture: bool) -> None:
        self._tracer = tracer
        self._capture = capture
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "url.path": request.path,
            "url.scheme": request.scheme,
        }
        if route is not None:
            attributes["http.route"] = route
        if request.remote:
            attributes["client.address"] = request.remote
        self._span = tracer.start_span(
            f"{request.method} {route}" if route else request.method,
            context=propagate.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        self._context: Context = set_span_in_context(self._span)
        self._first_try: float | None = None
        self._answering: AttemptTrace | None = None
        self._error: str | None = None

    def attempt(self, upstream: Upstream, number: int, chat: ChatCompletionRequest) -> AttemptTrace:
        """Start the span of attempt ``number`` to ``upstream``."""
        if self._first_try is None:
            self._first_try = time.perf_counter()
        model = upstream.upstream_model
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": upstream.provider.name,
            "gen_ai.request.model": model,
            "aichat.route": upstream.name,
            "aichat.upstream": upstream.label,
            "aichat.attempt": number,
            **_request_attributes(chat),
        }
        span = self._tracer.start_span(
            f"chat {model}", context=self._context, kind=SpanKind.CLIENT, attributes=attributes
        )
        return AttemptTrace(self, span, chat, self._capture)

    def answered_by(self, attempt: AttemptTrace) -> None:
        """``attempt`` sent the first event: time to first token, and where usage goes."""
        self._answering = attempt
        if self._first_try is not None:
            seconds = time.perf_counter() - self._first_try
            self._span.set_attribute("aichat.time_to_first_token", seconds)

    def usage(self, usage: Usage) -> None:
        """The answer's token counts, for the attempt that answered."""
        if self._answering is not None:
            self._answering.usage(usage)

    def cost(self, usd: float) -> None:
        """What the answer cost, in US dollars, once priced."""
        self._span.set_attribute("aichat.cost.usd", usd)

    def dropped(self, params: Iterable[str]) -> None:
        """Request parameters the answering upstream did not honour."""
        self._span.set_attribute("aichat.dropped_params", list(params))

    def broke_off(self, attempt: AttemptTrace, error: str) -> None:
        """``attempt`` failed: the request too, if it had answered (its status is sent)."""
        if attempt is self._answering:
            self._error = error

    def end(self, status: int, fields: Mapping[str, Any], request_id: str | None) -> None:
        """The response has been sent (``status``; 499: the client left first)."""
        span = self._span
        span.set_attribute("http.response.status_code", status)
        for field, attribute in _FIELDS:
            value = fields.get(field)
            if value is not None:
                span.set_attribute(attribute, value)
        if request_id is not None:
            span.set_attribute("aichat.request.id", request_id)
        if status >= 500 or self._error is not None:
            # The status, as the HTTP conventions say (the error's code is aichat.error).
            span.set_attribute("error.type", self._error or str(status))
            span.set_status(StatusCode.ERROR)
        span.end()


class TracedEvents:
    """An answer's events, seen by the attempt that answers, whose span ends with them."""

    __slots__ = ("_attempt", "_events")

    def __init__(self, events: EventStream, attempt: AttemptTrace) -> None:
        self._events = events
        self._attempt = attempt

    def __aiter__(self) -> TracedEvents:
        return self

    async def __anext__(self) -> Event:
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            self._attempt.failed(exc)
            raise
        self._attempt.see(event)
        return event

    async def aclose(self) -> None:
        """Close the answer's events (which records its usage), then end the span."""
        try:
            await self._events.aclose()
        finally:
            self._attempt.end()


class Tracing:
    """Tracing for one application: its export, started and stopped with it, and its
    middleware, which traces every API request (``/v1/...``)."""

    def __init__(self, capture_content: bool) -> None:
        self.capture_content = capture_content
        self.tracer: Tracer | None = None
        self.middleware = _middleware(self)

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx``: export from this process while the application runs."""
        export = Export(app[METRICS].registry)
        self.tracer = export.tracer()
        yield
        self.tracer = None
        await asyncio.to_thread(export.stop)


def _middleware(tracing: Tracing) -> Middleware:
    @web.middleware
    async def trace_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        tracer = tracing.tracer
        if tracer is None or not request.path.startswith("/v1/"):
            return await handler(request)
        trace = request[REQUEST_TRACE] = RequestTrace(tracer, request, tracing.capture_content)
        status = 499  # the client went away before an answer was complete
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            trace.end(status, request.get(LOG_FIELDS) or {}, request.get(REQUEST_ID))

    return trace_requests
