"""``POST /v1/responses``: OpenAI's Responses API.

A route whose upstream speaks Responses gets the request as it was sent (only ``model``,
``stream`` and ``max_output_tokens`` are read here) and its answer comes back as the
upstream sent it: stored state, encrypted reasoning and hosted tools are the upstream's to
serve. For any other upstream the request becomes a ``ChatCompletionRequest`` (a proper
chat-completions body, for Chat Completions upstreams); tools are mapped by
``responses_tools``. The answer's content blocks become output items: a ``message`` for
text, a ``reasoning`` item (summary text) for the model's reasoning, a ``function_call`` or
``custom_tool_call`` per tool call. Streams are the documented typed events, each with a
``sequence_number``, ending in ``response.completed`` (or ``response.incomplete``) only when
the upstream finished; a failure after the start ends with ``error`` and ``response.failed``.

Translated, the gateway stores nothing: ``previous_response_id``, ``store: true``,
``conversation``, ``background`` and item references are refused with a 400 naming the
parameter. Items that record a hosted tool's work are dropped and reported, as hosted tools
are; earlier ``reasoning`` items are context for the client only and never reach the
upstream as text.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, WithJsonSchema

from aichat.answer.answering import respond
from aichat.answer.blocks import (
    BlockDelta,
    BlockEvent,
    BlockStart,
    BlockStop,
    End,
    collect,
    segment,
)
from aichat.answer.passthrough import forward_body, forward_events, verbatim_or
from aichat.answer.reload import LIVE
from aichat.answer.sse import Final, named_event
from aichat.core.errors import APIError, ContextOverflow, InvalidRequest
from aichat.core.exchange import EXCHANGE
from aichat.core.ids import new_id
from aichat.core.prompt import Prompt
from aichat.core.schemas import (
    ChatCompletionRequest,
    Validated,
    parse_chat_request,
    parse_json,
    routing_fields,
)
from aichat.inbound.responses_tools import (
    ToolMap,
    custom_arguments,
    custom_input,
    map_tool_choice,
    map_tools,
)
from aichat.providers.base import Event, RawBody, RawEvents, Usage


class ResponsesRequest(BaseModel):
    """``POST /v1/responses`` body: what the gateway reads; other fields are kept."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    parallel_tool_calls: bool | None = None
    stream: bool = False
    # Accepted by the model so the handler can refuse them with a clear message; the
    # schema (/openapi.json) documents only what this stateless gateway serves.
    store: Annotated[bool | None, WithJsonSchema({"enum": [False, None]})] = None
    previous_response_id: Annotated[str | None, WithJsonSchema({"type": "null"})] = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None
    _mapped: tuple[ToolMap, list[str]] | None = PrivateAttr(default=None)

    def mapped_tools(self) -> tuple[ToolMap, list[str]]:
        """The chat tools for ``tools`` and the hosted tools dropped (``map_tools``), made
        once: the translation and the answer's envelope both need them."""
        if self._mapped is None:
            self._mapped = map_tools(self.tools or [])
        tools, dropped = self._mapped
        return tools, list(dropped)


# Fields with the same name and meaning in chat completions.
_SAME = ("user", "service_tier", "prompt_cache_key", "safety_identifier")
# Fields that need stored state, refused rather than silently ignored.
_STATEFUL = ("conversation", "background")


def _unsupported(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def _refuse_state(req: ResponsesRequest) -> None:
    if req.previous_response_id:
        raise _unsupported(
            "This gateway is stateless: send the whole conversation in 'input' instead of "
            "'previous_response_id'.",
            "previous_response_id",
        )
    if req.store:
        raise _unsupported("This gateway stores no responses: set 'store' to false.", "store")
    extra = req.model_extra or {}
    for name in _STATEFUL:
        if extra.get(name):
            raise _unsupported(
                f"'{name}' needs stored state, which this gateway keeps none of.", name
            )


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return {
            "type": "image_url",
            "image_url": {"url": part["image_url"], "detail": part.get("detail") or "auto"},
        }
    raise InvalidRequest(
        f"Content of type '{kind}' is not supported here; send input_text, output_text or "
        "input_image with an image_url.",
        param=where,
        code="unsupported_content",
    )


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest("Content must be a string or a list of parts.", param=where)
    return [_part(part, f"{where}[{j}]") for j, part in enumerate(content)]


def _output_text(output: Any, where: str) -> str:
    content = _content(output, where)
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part["type"] == "text")


# Items that record a hosted tool's work (or its approval): a chat upstream cannot take them.
_HOSTED_ITEMS = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "tool_search_call",
        "tool_search_output",
    }
)


def _add_call(messages: list[dict[str, Any]], call_id: Any, name: str, arguments: Any) -> None:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        # Calls made in the same turn share one assistant message, as chat expects.
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def input_messages(
    req: ResponsesRequest, tools: ToolMap, dropped: list[str]
) -> list[dict[str, Any]]:
    """The request's ``instructions`` and ``input`` as chat-completions messages.

    Items of hosted tools are left out and named in ``dropped``.
    """
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    if isinstance(req.input, str):
        return [*messages, {"role": "user", "content": req.input}]
    for i, item in enumerate(req.input):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") in ("user", "assistant", "system", "developer"):
            content = _content(item.get("content", ""), f"{where}.content")
            messages.append({"role": item["role"], "content": content})
        elif kind in ("function_call", "custom_tool_call"):
            name = tools.flat_name(str(item.get("name")), item.get("namespace"))
            arguments = (
                item.get("arguments", "")
                if kind == "function_call"
                else custom_arguments(str(item.get("input", "")))
            )
            _add_call(messages, item.get("call_id"), name, arguments)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = _output_text(item.get("output", ""), f"{where}.output")
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
            )
        elif kind == "reasoning":
            continue  # earlier reasoning: context for the client, never answer text upstream
        elif kind in _HOSTED_ITEMS:
            dropped.append(f"input.{kind}")
        elif kind == "item_reference":
            raise _unsupported("Item references need stored state; send the items.", where)
        else:
            raise InvalidRequest(
                f"Input item of type '{kind}' is not supported by this gateway.",
                param=where,
                code="unsupported_content",
            )
    return messages


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    fmt = text.get("format") or {}
    if not isinstance(fmt, dict):
        raise InvalidRequest("'text.format' must be an object.", param="text.format")
    if fmt.get("type") == "json_schema":
        keys = ("name", "schema", "strict", "description")
        return {"type": "json_schema", "json_schema": {k: fmt[k] for k in keys if k in fmt}}
    return {"type": "json_object"} if fmt.get("type") == "json_object" else None


def to_chat_request(req: ResponsesRequest) -> tuple[ChatCompletionRequest, list[str], ToolMap]:
    """The chat-completions request for ``req``, the fields that could not be carried, and
    the map from its tools' upstream names back to the client's."""
    _refuse_state(req)
    tools, dropped = req.mapped_tools()
    body: dict[str, Any] = {"model": req.model, "messages": input_messages(req, tools, dropped)}
    if req.stream:
        # Pass-through upstreams then report usage, which response.completed carries.
        body.update(stream=True, stream_options={"include_usage": True})
    choice, choice_dropped = map_tool_choice(req.tool_choice, tools)
    if req.tool_choice is not None and choice_dropped:
        dropped.append("tool_choice")
    if tools.tools:
        body["tools"] = tools.tools
        if choice is not None:
            body["tool_choice"] = choice
    optional = {
        "max_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "parallel_tool_calls": req.parallel_tool_calls,
        "response_format": _response_format(req.text) if req.text else None,
        "reasoning_effort": (req.reasoning or {}).get("effort"),
        "verbosity": (req.text or {}).get("verbosity"),
    }
    extra = req.model_extra or {}
    optional.update({name: extra.get(name) for name in _SAME})
    body.update({k: v for k, v in optional.items() if v is not None})
    dropped += [k for k, v in extra.items() if v is not None and k not in _SAME]
    if req.metadata:
        dropped.append("metadata")  # chat completions keeps metadata only with stored answers
    return parse_chat_request(body), dropped, tools


@dataclass(frozen=True, slots=True)
class Envelope:
    """What every Response object of one answer repeats: its id and the request's settings,
    and the request's tools, to name each call as the client declared it."""

    id: str
    created_at: int
    request: ResponsesRequest
    tools: ToolMap

    @classmethod
    def start(cls, request: ResponsesRequest, tools: ToolMap) -> Envelope:
        """A new response to ``request``, created now."""
        return cls(new_id("resp_", 48), int(time.time()), request, tools)

    def response(self, status: str, output: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """The ``response`` object in state ``status``; ``fields`` override the defaults."""
        req = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "model": req.model,
            "output": output,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": None,
            "reasoning": {"effort": (req.reasoning or {}).get("effort"), "summary": None},
            "store": False,
            "temperature": 1.0 if req.temperature is None else req.temperature,
            "text": req.text or {"format": {"type": "text"}},
            "tool_choice": req.tool_choice or "auto",
            "tools": req.tools or [],
            "top_p": 1.0 if req.top_p is None else req.top_p,
            "truncation": "disabled",
            "usage": None,
            "user": req.user,
            "metadata": req.metadata or {},
            **fields,
        }

    def kind(self, block: BlockStart | BlockStop) -> str:
        """The output item type of ``block``."""
        if block.reasoning:
            return "reasoning"
        if block.tool is None:
            return "message"
        custom = self.tools.client_tool(block.tool.name).custom
        return "custom_tool_call" if custom else "function_call"

    def output_item(
        self, item_id: str, block: BlockStart | BlockStop, status: str
    ) -> dict[str, Any]:
        """The output item of a block: whole once it has stopped, empty while it opens."""
        text = block.text if isinstance(block, BlockStop) else ""
        kind = self.kind(block)
        item: dict[str, Any] = {"id": item_id, "type": kind}
        if kind == "reasoning":
            summary = [{"type": "summary_text", "text": text}] if text else []
            return {**item, "summary": summary, "status": status}
        if kind == "message":
            content = [_text_part(text)] if isinstance(block, BlockStop) else []
            return {**item, "status": status, "role": "assistant", "content": content}
        assert block.tool is not None  # the kind says so
        client = self.tools.client_tool(block.tool.name)
        item.update(call_id=block.tool.id, name=client.name)
        if client.namespace is not None:
            item["namespace"] = client.namespace
        if kind == "custom_tool_call":
            return {**item, "input": custom_input(text) if text else ""}
        return {**item, "status": status, "arguments": text}


def item_id(kind: str) -> str:
    """A fresh id for an output item of type ``kind``."""
    prefix = {"message": "msg_", "reasoning": "rs_", "custom_tool_call": "ctc_"}
    return new_id(prefix.get(kind, "fc_"), 48)


def usage_object(usage: Usage) -> dict[str, Any]:
    """The Responses API's ``usage`` object (its reasoning count is required: 0 from an
    upstream that does not say, as Anthropic)."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _summary_part(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


# finish_reason -> why the response is incomplete (other reasons: it is complete).
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def ending(end: End) -> tuple[str, dict[str, Any]]:
    """The final status of a response that ended with ``end``, and the fields that say so."""
    reason = _INCOMPLETE.get(end.reason)
    fields: dict[str, Any] = {"usage": usage_object(end.usage)}
    if reason is None:
        return "completed", fields
    return "incomplete", {**fields, "incomplete_details": {"reason": reason}}


async def whole_response(
    envelope: Envelope, blocks: AsyncIterator[list[BlockEvent]]
) -> dict[str, Any]:
    """The complete Response object, once the answer has ended."""
    stops, end = await collect(blocks)
    output = [
        envelope.output_item(item_id(envelope.kind(stop)), stop, "completed") for stop in stops
    ]
    status, fields = ending(end)
    return envelope.response(status, output, **fields)


def _encoded_once(value: dict[str, Any]) -> Any:
    """``value`` as JSON made once, for events that repeat it (a response object holds the
    request's tools: 20 KB for Codex); ``value`` itself when orjson refuses it, for
    ``named_event`` to write with json."""
    try:
        return orjson.Fragment(orjson.dumps(value))
    except TypeError:  # orjson.JSONEncodeError is one
        return value


class ResponseStream:
    """The typed events of one streamed response, numbered in order.

    Each kind of output item has its own events: ``output_text`` for a message,
    ``reasoning_summary_text`` for reasoning, ``function_call_arguments`` for a function
    call. A custom tool's input is sent whole when its call is complete: it streams from
    upstream as JSON around the input, which cannot be cut into input pieces before then.
    """

    def __init__(self, envelope: Envelope) -> None:
        self._envelope = envelope
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._item_id = ""
        self._kind = "message"

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return named_event(kind, data)

    def _place(self, index: int) -> dict[str, Any]:
        return {"item_id": self._item_id, "output_index": index}

    def _start(self, block: BlockStart) -> list[bytes]:
        self._kind = self._envelope.kind(block)
        self._item_id = item_id(self._kind)
        item = self._envelope.output_item(self._item_id, block, "in_progress")
        events = [self._event("response.output_item.added", output_index=block.index, item=item)]
        place = self._place(block.index)
        if self._kind == "message":
            part = _text_part("")
            events.append(
                self._event("response.content_part.added", **place, content_index=0, part=part)
            )
        elif self._kind == "reasoning":
            part = _summary_part("")
            events.append(
                self._event(
                    "response.reasoning_summary_part.added", **place, summary_index=0, part=part
                )
            )
        return events

    def _delta(self, delta: BlockDelta) -> list[bytes]:
        place = self._place(delta.index)
        if self._kind == "message":
            event = self._event(
                "response.output_text.delta",
                **place,
                content_index=0,
                delta=delta.text,
                logprobs=[],
            )
        elif self._kind == "reasoning":
            event = self._event(
                "response.reasoning_summary_text.delta", **place, summary_index=0, delta=delta.text
            )
        elif self._kind == "function_call":
            event = self._event("response.function_call_arguments.delta", **place, delta=delta.text)
        else:
            return []  # a custom tool's input goes out whole, with its stop
        return [event]

    def _done(self, stop: BlockStop, item: dict[str, Any]) -> list[bytes]:
        place = self._place(stop.index)
        if self._kind == "message":
            text = {"content_index": 0, "text": stop.text}
            return [
                self._event("response.output_text.done", **place, **text, logprobs=[]),
                self._event(
                    "response.content_part.done",
                    **place,
                    content_index=0,
                    part=_text_part(stop.text),
                ),
            ]
        if self._kind == "reasoning":
            summary = {"summary_index": 0}
            return [
                self._event(
                    "response.reasoning_summary_text.done", **place, **summary, text=stop.text
                ),
                self._event(
                    "response.reasoning_summary_part.done",
                    **place,
                    **summary,
                    part=_summary_part(stop.text),
                ),
            ]
        if self._kind == "function_call":
            return [
                self._event("response.function_call_arguments.done", **place, arguments=stop.text)
            ]
        text = item["input"]
        return [
            self._event("response.custom_tool_call_input.delta", **place, delta=text),
            self._event("response.custom_tool_call_input.done", **place, input=text),
        ]

    def _stop(self, stop: BlockStop) -> list[bytes]:
        item = self._envelope.output_item(self._item_id, stop, "completed")
        self._output.append(item)
        events = self._done(stop, item)
        return [
            *events,
            self._event("response.output_item.done", output_index=stop.index, item=item),
        ]

    def _of(self, block: BlockEvent) -> list[bytes]:
        """The events of one block event; the final one for ``End``."""
        if isinstance(block, BlockStart):
            return self._start(block)
        if isinstance(block, BlockDelta):
            return self._delta(block)
        if isinstance(block, BlockStop):
            return self._stop(block)
        status, fields = ending(block)
        final = self._envelope.response(status, self._output, **fields)
        return [self._event(f"response.{status}", response=final)]

    async def events(
        self, blocks: AsyncGenerator[list[BlockEvent], None]
    ) -> AsyncGenerator[bytes, None]:
        """Every event of the response, ending ``response.completed`` only if it completed;
        the events of one upstream read together, in one write."""
        started = _encoded_once(self._envelope.response("in_progress", []))
        yield self._event("response.created", response=started) + self._event(
            "response.in_progress", response=started
        )
        async with aclosing(blocks):
            async for found in blocks:
                data = b"".join([event for block in found for event in self._of(block)])
                if isinstance(found[-1], End):
                    yield Final(data)  # with the end of the body
                    return
                yield data

    def failed(self, err: APIError) -> bytes:
        """The end of a stream that failed after it started: ``error``, ``response.failed``."""
        # The Response object's error code is one of a fixed few (and the overflow OpenAI
        # reports, which the Codex CLI compacts on); the error event keeps ours.
        if isinstance(err, ContextOverflow):
            code = err.code
        else:
            code = "rate_limit_exceeded" if err.status == 429 else "server_error"
        failure = {"code": code, "message": err.message}
        final = self._envelope.response("failed", self._output, error=failure)
        return self._event(
            "error", code=err.code, message=err.message, param=err.param
        ) + self._event("response.failed", response=final)


def responses_prompt(request: Validated[ResponsesRequest], raw: bytes) -> Prompt:
    """A Responses request as the answer path carries it: validated and translated to Chat
    Completions only for an upstream of another API."""
    body = request.body
    model, stream, max_tokens = routing_fields(body, "max_output_tokens")

    def to_chat() -> tuple[ChatCompletionRequest, list[str]]:
        chat, dropped, _ = to_chat_request(request())
        return chat, dropped

    return Prompt("responses", model, stream, body, raw, to_chat, max_tokens)


class ResponsesSpeaker:
    """The Responses API's words for an answer: its typed events, or a whole response."""

    __slots__ = ("_envelope", "_limit", "_prompt", "_req", "_stream")

    def __init__(self, prompt: Prompt, request: Validated[ResponsesRequest], limit: float) -> None:
        self._prompt = prompt
        self._req = request  # validated once, shared with the translation
        # Characters of an answer kept: both answers repeat every item whole at their end.
        self._limit = limit
        self._envelope: Envelope | None = None
        self._stream: ResponseStream | None = None

    def _started(self) -> Envelope:
        if self._envelope is None:
            req = self._req()
            self._envelope = Envelope.start(req, req.mapped_tools()[0])
        return self._envelope

    def stream(self, first: Event, events: AsyncIterator[Event]) -> AsyncGenerator[bytes, None]:
        """The events of a streamed response: the upstream's own, when it speaks Responses."""
        if isinstance(first, RawEvents) and first.api == "responses":
            return forward_events(first, events, self._prompt.model)
        self._stream = ResponseStream(self._started())
        return self._stream.events(segment(first, events, self._prompt, limit=self._limit))

    async def whole(self, first: Event, events: AsyncIterator[Event]) -> bytes:
        """A whole response: the upstream's own, when it speaks Responses."""
        if isinstance(first, RawBody) and first.api == "responses":
            return await forward_body(first, events, self._prompt.model)
        blocks = segment(first, events, self._prompt, limit=self._limit)
        return orjson.dumps(await whole_response(self._started(), blocks))

    def failed(self, err: APIError) -> bytes:
        """``error`` and ``response.failed``: the upstream's own, when it speaks Responses."""
        verbatim = verbatim_or(err, "responses")
        if verbatim is not None:
            return verbatim
        stream = self._stream or ResponseStream(self._started())
        return stream.failed(err)


async def create_response(request: web.Request) -> web.StreamResponse:
    """Answer one Responses API request, streamed or whole."""
    # Read exactly only if translated: untranslated, its bytes go upstream as sent.
    raw = await request.read()  # raises 413 past client_max_size
    body = Validated(ResponsesRequest, parse_json(raw, exact=False), raw)
    prompt = responses_prompt(body, raw)
    speaker = ResponsesSpeaker(prompt, body, request.app[LIVE].settings.max_answer_bytes)
    return await respond(request, request[EXCHANGE], prompt, speaker)
