"""The spans of one API request: a server span, and a client span per upstream attempt.

Imported only when tracing is on (``aichat.operations.trace_setup``). Decisions:

- **GenAI semantic conventions** (OpenTelemetry's ``gen_ai.*``, development status, as
  published in 2026) on each upstream attempt: a ``CLIENT`` span named
  ``chat {upstream model}`` with ``gen_ai.operation.name`` (``chat``: Chat Completions,
  Responses and Messages alike), ``gen_ai.provider.name`` (the route's provider:
  ``openai`` for any OpenAI-compatible upstream, Chat Completions or Responses,
  ``anthropic``, ``aichats``, ``mock``), ``gen_ai.request.*`` and ``gen_ai.output.type``
  as the client sent them, ``gen_ai.response.model`` / ``id`` / ``finish_reasons`` (in the
  upstream's words: Chat Completions' ``finish_reason``, Messages' ``stop_reason``;
  Responses has none, so ``stop``, or why it is incomplete),
  ``gen_ai.response.time_to_first_chunk`` (streams), ``gen_ai.usage.*`` (the meter's count:
  input tokens include the cached ones, output tokens the reasoning ones, which are also
  given apart), ``server.address`` / ``server.port`` of the request sent (answered or not), and
  ``error.type`` (the upstream's HTTP status, ``upstream_timeout``, ``cancelled``, ...) for
  an attempt that failed. The conventions' one span per logical call would hide retries and
  fallbacks: here each attempt is its own span, numbered (``aichat.attempt``).
- **The server span** (``SERVER``, HTTP conventions: ``POST /v1/chat/completions``) carries
  aichat's own attributes, read from the request's ``Exchange`` once it is answered:
  ``aichat.key.name`` (the key's name, never the key), ``aichat.route``,
  ``aichat.request.model`` (as the client asked), ``aichat.upstream``, ``aichat.attempts``,
  ``aichat.error``, ``aichat.cost.usd`` (when priced: the access line's ``cost_usd``),
  ``aichat.request.id`` (the access line's); and ``aichat.dropped_params`` and
  ``aichat.time_to_first_token`` (from the upstream call to the first event, retries
  included, as the metric). No ``gen_ai.*`` there, so tools that add up token counts over a
  trace count each answer once.
- **Context**: a client's ``traceparent`` (or whatever ``OTEL_PROPAGATORS`` names) parents
  the server span; each attempt's own context goes upstream in its HTTP request
  (``aichat.core.trace.OUTBOUND``). Spans are parented explicitly: nothing is made
  "current", so no context variable is touched per event.
- **Unsampled requests** (the sampler's decision, or the client's ``traceparent``) get no
  hooks at all, only ``OUTBOUND`` for the whole request, so their upstream requests carry
  the trace and the decision: where traces are sampled, most requests cost little more than
  with tracing off.
- **Cheap per event**: an upstream's own words are not parsed. Finish reasons are found
  with a regular expression, only in what can hold one (quotes inside JSON strings are
  escaped, so only keys match), the response's model and id in its first event only, and
  attributes are set in one call per span wherever they are known together.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer, set_span_in_context
from yarl import URL

from aichat.core.errors import APIError, UpstreamError
from aichat.core.exchange import EXCHANGE, Exchange, Handler
from aichat.core.trace import OUTBOUND, Asked, Outbound, Upstream
from aichat.operations.metrics import METRICS
from aichat.operations.trace_content import Output, input_attributes
from aichat.operations.trace_export import Export
from aichat.providers.base import Finish, RawBody, RawChunks, RawCompletion, RawEvents

_FINISH_REASON = re.compile(r'"finish_reason"\s*:\s*"([^"\\]{1,64})"')
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,256})"')
_ID = re.compile(rb'"id"\s*:\s*"([^"\\]{1,256})"')
_STOP_REASON = re.compile(rb'"stop_reason"\s*:\s*"([^"\\]{1,64})"')
_INCOMPLETE = re.compile(rb'"incomplete_details"\s*:\s*\{\s*"reason"\s*:\s*"([^"\\]{1,64})"')
# Access-line fields (``Exchange.fields``) that become server span attributes.
_FIELDS = (
    ("key", "aichat.key.name"),
    ("route", "aichat.route"),
    ("model", "aichat.request.model"),
    ("upstream", "aichat.upstream"),
    ("attempts", "aichat.attempts"),
    ("error", "aichat.error"),
)
# The meter's access-line fields (``aichat.answer.usage``) that become usage attributes.
# Cache writes go under the conventions' current name and under the one it replaced, which
# tools still read (Phoenix 20 counts a span's cache writes from that one only).
_USAGE = (
    ("prompt_tokens", ("gen_ai.usage.input_tokens",)),
    ("completion_tokens", ("gen_ai.usage.output_tokens",)),
    ("reasoning_tokens", ("gen_ai.usage.reasoning.output_tokens",)),
    ("cache_read_tokens", ("gen_ai.usage.cache_read.input_tokens",)),
    (
        "cache_write_tokens",
        ("gen_ai.usage.cache_write.input_tokens", "gen_ai.usage.cache_creation.input_tokens"),
    ),
)
# Sampling parameters by their name in each API's request.
_NUMBERS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}
_STOPS = {"chat": "stop", "messages": "stop_sequences"}  # Responses has none
# Where each API's request names the output format it wants: the object holding ``type``.
_FORMATS = {
    "chat": ("response_format", "type"),
    "responses": ("text", "format", "type"),
    "messages": ("output_config", "format", "type"),
}
# ``gen_ai.output.type`` by the requested format's type.
_OUTPUT_TYPES = {"text": "text", "json_object": "json", "json_schema": "json"}
# Where each API's request names its reasoning effort (``gen_ai.request.reasoning.level``).
_EFFORTS = {
    "chat": ("reasoning_effort",),
    "responses": ("reasoning", "effort"),
    "messages": ("output_config", "effort"),
}


def _error_type(exc: BaseException) -> str:
    """``error.type``: low in cardinality, as the conventions ask."""
    if isinstance(exc, UpstreamError) and exc.upstream_status is not None:
        return str(exc.upstream_status)
    if isinstance(exc, APIError):
        return exc.code or type(exc).__name__
    return type(exc).__qualname__


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text_at(body: Any, keys: tuple[str, ...]) -> str | None:
    """The string at ``keys`` in a request's JSON ``body``, if there is one."""
    for key in keys:
        body = body.get(key) if isinstance(body, dict) else None
    return body if isinstance(body, str) else None


def _request_attributes(prompt: Asked) -> dict[str, Any]:
    """What the client asked for, read from its own request (a client's values: checked)."""
    body = prompt.body
    attributes: dict[str, Any] = {}
    if prompt.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = prompt.max_tokens
    for name, attribute in _NUMBERS.items():
        value = body.get(name)
        if _number(value):
            attributes[attribute] = value
    stops = _STOPS.get(prompt.api)
    stop = body.get(stops) if stops else None
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list) and stop and all(isinstance(item, str) for item in stop):
        attributes["gen_ai.request.stop_sequences"] = stop[:16]
    choices = body.get("n")
    if prompt.api == "chat" and _number(choices) and choices != 1:
        attributes["gen_ai.request.choice.count"] = choices
    output_type = _OUTPUT_TYPES.get(_text_at(body, _FORMATS.get(prompt.api, ())) or "")
    if output_type is not None:
        attributes["gen_ai.output.type"] = output_type
    effort = _text_at(body, _EFFORTS.get(prompt.api, ()))
    if effort:
        attributes["gen_ai.request.reasoning.level"] = effort
    if prompt.stream:
        attributes["gen_ai.request.stream"] = True
    return attributes


def _native_reasons(api: str, data: bytes, last: bool) -> list[str]:
    """The finish reasons in Messages or Responses ``data`` (``last``: it ends the answer)."""
    if api == "messages":
        if b'"stop_reason"' not in data:
            return []
        return [reason.decode() for reason in _STOP_REASON.findall(data)]
    if not last:
        return []
    incomplete = _INCOMPLETE.search(data)
    return [incomplete[1].decode() if incomplete is not None else "stop"]


class AttemptTrace:
    """The client span of one upstream attempt, from its request to the end of its answer.

    Made by ``RequestTrace.attempt``; ``aichat.operations.tracing.TracedEvents`` tells it
    its events. What it learns is kept and set on the span in one call, when it ends.
    """

    __slots__ = (
        "_answered",
        "_complete",
        "_failed",
        "_finish",
        "_learnt",
        "_output",
        "_request",
        "_span",
        "_started",
        "_stream",
        "outbound",
    )

    def __init__(self, request: RequestTrace, span: Span, prompt: Asked, capture: bool) -> None:
        self._request = request
        self._span = span
        self._stream = prompt.stream
        self._started = time.perf_counter()
        self._learnt: dict[str, Any] = {}
        self._finish: list[str] = []  # finish reasons in the upstream's words
        self._complete: str | None = None  # the provider's finish reason, once complete
        self._failed: str | None = None  # its error.type, once failed
        self._answered = False  # its first event came
        self._output = Output() if capture else None
        headers: dict[str, str] = {}
        propagate.inject(headers, context=set_span_in_context(span))
        self.outbound = Outbound(headers)

    def started(self, first: object) -> None:
        """The upstream's first event arrived: this attempt answers the request."""
        self._answered = True
        learnt = self._learnt
        if self._stream:
            learnt["gen_ai.response.time_to_first_chunk"] = time.perf_counter() - self._started
        if isinstance(first, RawChunks) and first.jsons:
            self._identify(first.jsons[0].encode())
        elif isinstance(first, RawCompletion):
            self._identify(first.json.encode())
        elif isinstance(first, RawEvents | RawBody):
            self._identify(first.data)
        self._request.answered_by(self)
        self.see(first)

    def _identify(self, data: bytes) -> None:
        """The response's model and id, from the start of an answer."""
        model, response_id = _MODEL.search(data), _ID.search(data)
        if model is not None:
            self._learnt["gen_ai.response.model"] = model[1].decode()
        if response_id is not None:
            self._learnt["gen_ai.response.id"] = response_id[1].decode()

    def see(self, event: object) -> None:
        """One event of the answer, as it passes."""
        if isinstance(event, RawChunks):
            for text in event.jsons:
                self._finish += _FINISH_REASON.findall(text)
            if event.last:  # only Finish follows, maybe unread
                self._complete = "stop"
        elif isinstance(event, RawEvents):
            self._finish += _native_reasons(event.api, event.data, event.last)
            if event.last:
                self._complete = "stop"
        elif isinstance(event, Finish):
            self._complete = event.reason
        elif isinstance(event, RawCompletion):
            self._finish += _FINISH_REASON.findall(event.json)
        elif isinstance(event, RawBody):
            self._finish += _native_reasons(event.api, event.data, True)
        if self._output is not None:
            self._output.see(event)

    def failed(self, exc: BaseException) -> None:
        """The attempt ended with ``exc``, before its first event or in the middle of it."""
        if isinstance(exc, asyncio.CancelledError):  # the client left: no fault here
            self._failed = self._learnt["error.type"] = "cancelled"
            return
        cause = exc.cause if isinstance(exc, UpstreamError) else type(exc).__name__
        self._fail(_error_type(exc), cause)

    def _fail(self, error: str, cause: str) -> None:
        self._failed = self._learnt["error.type"] = error
        self._span.set_status(StatusCode.ERROR, cause)
        self._request.broke_off(self, error)

    def end(self) -> None:
        """The answer is closed (its usage is noted by then): complete if the provider said
        so, else cut short."""
        learnt = self._learnt
        if not self._answered and self._failed is None:
            self._fail("no_answer", "the upstream's answer ended before its first event")
        if self._complete is None or self._failed is not None:
            reasons = ["error"]
        else:
            reasons = self._finish or [self._complete]
        learnt["gen_ai.response.finish_reasons"] = reasons
        url = self.outbound.url  # the upstream's, answered or not, once a request was sent
        if url is not None:
            parsed = URL(url)
            if parsed.host:
                learnt["server.address"] = parsed.host
            if parsed.port:
                learnt["server.port"] = parsed.port
        self._request.usage_of(self, learnt)
        if self._output is not None:
            learnt["gen_ai.output.messages"] = self._output.messages(reasons[0])
        self._span.set_attributes(learnt)
        self._span.end()


class RequestTrace:
    """The server span of one API request, and the parent of its attempts' spans."""

    __slots__ = (
        "_answering",
        "_capture",
        "_context",
        "_error",
        "_exchange",
        "_first_token",
        "_span",
        "_tracer",
        "recording",
    )

    def __init__(
        self, tracer: Tracer, request: web.Request, exchange: Exchange, capture: bool
    ) -> None:
        self._tracer = tracer
        self._exchange = exchange
        self._capture = capture
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "url.path": request.path,
            "url.scheme": request.scheme,
            "aichat.request.id": exchange.request_id,
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
        self.recording = self._span.is_recording()  # sampled
        self._answering: AttemptTrace | None = None
        self._error: str | None = None
        self._first_token: float | None = None  # seconds from the upstream call

    def attempt(self, upstream: Upstream, number: int, prompt: Asked) -> AttemptTrace:
        """Start the span of attempt ``number`` to ``upstream``."""
        model = upstream.upstream_model
        provider = upstream.provider
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider.name,
            "gen_ai.request.model": model,
            "aichat.route": upstream.name,
            "aichat.upstream.api": provider.api,
            "aichat.attempt": number,
            **_request_attributes(prompt),
        }
        if self._capture:
            attributes.update(input_attributes(prompt))
        span = self._tracer.start_span(
            f"chat {model}", context=self._context, kind=SpanKind.CLIENT, attributes=attributes
        )
        return AttemptTrace(self, span, prompt, self._capture)

    def answered_by(self, attempt: AttemptTrace) -> None:
        """``attempt`` sent the first event: time to first token, and whose usage it is."""
        self._answering = attempt
        called = self._exchange.upstream_called
        if called is not None:
            self._first_token = time.perf_counter() - called

    def usage_of(self, attempt: AttemptTrace, attributes: dict[str, Any]) -> None:
        """The answer's token counts as the meter noted them, if ``attempt`` answered."""
        if attempt is not self._answering:
            return
        fields = self._exchange.fields
        for field, names in _USAGE:
            value = fields.get(field)
            if value:
                for name in names:
                    attributes[name] = value

    def unsampled(self) -> Outbound:
        """What every upstream request of an unsampled request carries: its trace, and the
        decision not to sample it."""
        headers: dict[str, str] = {}
        propagate.inject(headers, context=self._context)
        return Outbound(headers)

    def dropped(self, params: list[str]) -> None:
        """Request parameters the answering upstream does not get."""
        self._span.set_attribute("aichat.dropped_params", params)

    def broke_off(self, attempt: AttemptTrace, error: str) -> None:
        """``attempt`` failed: the request too, if it had answered (its status is sent)."""
        if attempt is self._answering:
            self._error = error

    def end(self, status: int) -> None:
        """The request is answered with ``status`` (499: the client left first)."""
        fields = self._exchange.fields
        attributes: dict[str, Any] = {"http.response.status_code": status}
        for field, attribute in _FIELDS:
            value = fields.get(field)
            if value is not None:
                attributes[attribute] = value
        cost = fields.get("cost_usd")
        if cost is not None:
            attributes["aichat.cost.usd"] = float(cost)
        if self._first_token is not None:
            attributes["aichat.time_to_first_token"] = self._first_token
        span = self._span
        if status >= 500 or self._error is not None:
            # The status, as the HTTP conventions say (the error's code is aichat.error).
            attributes["error.type"] = self._error or str(status)
            span.set_status(StatusCode.ERROR)
        span.set_attributes(attributes)
        span.end()


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
        exchange = request[EXCHANGE]
        trace = RequestTrace(tracer, request, exchange, tracing.capture_content)
        if not trace.recording:
            # Not sampled: nothing to record, so no hooks on the request path (unsampled
            # requests are most of them where traces are sampled); the decision goes on
            # with the trace to every upstream request it makes.
            token = OUTBOUND.set(trace.unsampled())
            try:
                return await handler(request)
            finally:
                OUTBOUND.reset(token)
        exchange.trace = trace
        status = 499  # the client went away before an answer was complete
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            trace.end(status)

    return trace_requests
