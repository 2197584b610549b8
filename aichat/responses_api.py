"""``POST /v1/responses``: OpenAI's Responses API, translated onto the chat-completions path.

The request becomes a ``ChatCompletionRequest`` (whose body is a proper chat-completions body,
for pass-through upstreams); the answer's content blocks become output items: a ``message``
for text, a ``function_call`` per tool call. Streams are the documented typed events, each
with a ``sequence_number``, ending in ``response.completed`` (or ``response.incomplete``)
only when the upstream finished; a failure after the start ends with ``error`` and
``response.failed``.

The gateway stores nothing: ``previous_response_id``, ``store: true``, ``conversation``,
``background`` and item references are refused with a 400 naming the parameter.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from aichat.answering import start_answer
from aichat.blocks import BlockDelta, BlockEvent, BlockStart, BlockStop, End, collect, segment
from aichat.errors import APIError, InvalidRequest
from aichat.ids import new_id
from aichat.providers.base import Usage
from aichat.schemas import ChatCompletionRequest, parse_chat_request, read_json, validate_body
from aichat.sse import named_event, write_sse


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


def input_messages(req: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's ``instructions`` and ``input`` as chat-completions messages."""
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
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                # Calls made in the same turn share one assistant message, as chat expects.
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = _output_text(item.get("output", ""), f"{where}.output")
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
            )
        elif kind == "reasoning":
            continue  # another model's reasoning: nothing a chat upstream can take
        elif kind == "item_reference":
            raise _unsupported("Item references need stored state; send the items.", where)
        else:
            raise InvalidRequest(
                f"Input item of type '{kind}' is not supported by this gateway.",
                param=where,
                code="unsupported_content",
            )
    return messages


def _tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
        raise InvalidRequest(
            f"Tool of type '{tool.get('type')}' is not supported: only function tools with a "
            "name are.",
            param=where,
            code="unsupported_tool",
        )
    keys = ("name", "description", "parameters", "strict")
    return {"type": "function", "function": {k: tool[k] for k in keys if tool.get(k) is not None}}


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest(
        "Only 'auto', 'none', 'required' or a function tool_choice is supported.",
        param="tool_choice",
        code="unsupported_tool",
    )


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    fmt = text.get("format") or {}
    if not isinstance(fmt, dict):
        raise InvalidRequest("'text.format' must be an object.", param="text.format")
    if fmt.get("type") == "json_schema":
        keys = ("name", "schema", "strict", "description")
        return {"type": "json_schema", "json_schema": {k: fmt[k] for k in keys if k in fmt}}
    return {"type": "json_object"} if fmt.get("type") == "json_object" else None


def to_chat_request(req: ResponsesRequest) -> tuple[ChatCompletionRequest, list[str]]:
    """The chat-completions request for ``req``, and the fields that could not be carried."""
    _refuse_state(req)
    body: dict[str, Any] = {"model": req.model, "messages": input_messages(req)}
    if req.stream:
        # Pass-through upstreams then report usage, which response.completed carries.
        body.update(stream=True, stream_options={"include_usage": True})
    if req.tools:
        body["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(req.tools)]
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice)
    optional = {
        "max_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "parallel_tool_calls": req.parallel_tool_calls,
        "response_format": _response_format(req.text) if req.text else None,
        "reasoning_effort": (req.reasoning or {}).get("effort"),
    }
    extra = req.model_extra or {}
    optional.update({name: extra.get(name) for name in _SAME})
    body.update({k: v for k, v in optional.items() if v is not None})
    dropped = [k for k, v in extra.items() if v is not None and k not in _SAME]
    if req.metadata:
        dropped.append("metadata")  # chat completions keeps metadata only with stored answers
    return parse_chat_request(body), dropped


@dataclass(frozen=True, slots=True)
class Envelope:
    """What every Response object of one answer repeats: its id and the request's settings."""

    id: str
    created_at: int
    request: ResponsesRequest

    @classmethod
    def start(cls, request: ResponsesRequest) -> Envelope:
        """A new response to ``request``, created now."""
        return cls(new_id("resp_", 48), int(time.time()), request)

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


def usage_object(usage: Usage) -> dict[str, Any]:
    """The Responses API's ``usage`` object."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def output_item(item_id: str, stop: BlockStop | BlockStart, status: str) -> dict[str, Any]:
    """The output item of a block: a ``message`` for text, else a ``function_call``."""
    if stop.tool is None:
        content = [_text_part(stop.text)] if isinstance(stop, BlockStop) else []
        return {
            "id": item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": stop.tool.id,
        "name": stop.tool.name,
        "arguments": stop.tool.arguments,
    }


# finish_reason -> why the response is incomplete (other reasons: it is complete).
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def ending(end: End) -> tuple[str, dict[str, Any]]:
    """The final status of a response that ended with ``end``, and the fields that say so."""
    reason = _INCOMPLETE.get(end.reason)
    fields: dict[str, Any] = {"usage": usage_object(end.usage)}
    if reason is None:
        return "completed", fields
    return "incomplete", {**fields, "incomplete_details": {"reason": reason}}


async def whole_response(envelope: Envelope, blocks: AsyncIterator[BlockEvent]) -> dict[str, Any]:
    """The complete Response object, once the answer has ended."""
    stops, end = await collect(blocks)
    output = [output_item(new_id("fc_" if s.tool else "msg_", 48), s, "completed") for s in stops]
    status, fields = ending(end)
    return envelope.response(status, output, **fields)


class ResponseStream:
    """The typed events of one streamed response, numbered in order."""

    def __init__(self, envelope: Envelope) -> None:
        self._envelope = envelope
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._item_id = ""

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return named_event(kind, data)

    def _place(self, index: int) -> dict[str, Any]:
        return {"item_id": self._item_id, "output_index": index}

    def _start(self, block: BlockStart) -> list[bytes]:
        self._item_id = new_id("fc_" if block.tool else "msg_", 48)
        item = output_item(self._item_id, block, "in_progress")
        events = [self._event("response.output_item.added", output_index=block.index, item=item)]
        if block.tool is None:
            place = self._place(block.index)
            part = _text_part("")
            events.append(
                self._event("response.content_part.added", **place, content_index=0, part=part)
            )
        return events

    def _delta(self, delta: BlockDelta, text: bool) -> bytes:
        if text:
            return self._event(
                "response.output_text.delta",
                **self._place(delta.index),
                content_index=0,
                delta=delta.text,
                logprobs=[],
            )
        return self._event(
            "response.function_call_arguments.delta", **self._place(delta.index), delta=delta.text
        )

    def _stop(self, stop: BlockStop) -> list[bytes]:
        item = output_item(self._item_id, stop, "completed")
        self._output.append(item)
        place = self._place(stop.index)
        if stop.tool is None:
            events = [
                self._event(
                    "response.output_text.done",
                    **place,
                    content_index=0,
                    text=stop.text,
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done",
                    **place,
                    content_index=0,
                    part=_text_part(stop.text),
                ),
            ]
        else:
            events = [
                self._event("response.function_call_arguments.done", **place, arguments=stop.text)
            ]
        events.append(self._event("response.output_item.done", output_index=stop.index, item=item))
        return events

    async def events(self, blocks: AsyncIterator[BlockEvent]) -> AsyncGenerator[bytes, None]:
        """Every event of the response, ending ``response.completed`` only if it completed."""
        started = self._envelope.response("in_progress", [])
        yield self._event("response.created", response=started)
        yield self._event("response.in_progress", response=started)
        text = False
        async for block in blocks:
            if isinstance(block, BlockStart):
                text = block.tool is None
                for event in self._start(block):
                    yield event
            elif isinstance(block, BlockDelta):
                yield self._delta(block, text)
            elif isinstance(block, BlockStop):
                for event in self._stop(block):
                    yield event
            else:
                status, fields = ending(block)
                final = self._envelope.response(status, self._output, **fields)
                yield self._event(f"response.{status}", response=final)

    def failed(self, err: APIError) -> bytes:
        """The end of a stream that failed after it started: ``error``, ``response.failed``."""
        # The Response object's error code is one of a fixed few; the error event keeps ours.
        code = "rate_limit_exceeded" if err.status == 429 else "server_error"
        failure = {"code": code, "message": err.message}
        final = self._envelope.response("failed", self._output, error=failure)
        return self._event(
            "error", code=err.code, message=err.message, param=err.param
        ) + self._event("response.failed", response=final)


async def create_response(request: web.Request) -> web.StreamResponse:
    """Answer one Responses API request, streamed or whole."""
    req = validate_body(ResponsesRequest, await read_json(request))
    chat, dropped = to_chat_request(req)
    answer, headers = await start_answer(request, chat, dropped)
    envelope = Envelope.start(req)
    async with aclosing(answer.events) as events:
        blocks = segment(answer.first, events, chat)
        if req.stream:
            stream = ResponseStream(envelope)
            return await write_sse(request, stream.events(blocks), stream.failed, headers)
        return web.json_response(await whole_response(envelope, blocks), headers=headers)
