"""``POST /v1/messages``: Anthropic's Messages API, translated onto the chat-completions path.

The request becomes a ``ChatCompletionRequest`` (``system`` a system message, ``tool_use``
blocks tool calls, ``tool_result`` blocks tool messages); the answer's content blocks become
``text`` and ``tool_use`` blocks. Streams are Anthropic's named events: ``message_start``,
``ping``, ``content_block_start``/``_delta``/``_stop``, ``message_delta`` with the stop reason
and usage, and ``message_stop`` only when the upstream finished; a failure after the start
ends with an ``error`` event instead. Every error on this path, 401 included, is in
Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from aichat.answering import start_answer
from aichat.blocks import BlockDelta, BlockEvent, BlockStart, BlockStop, End, collect, segment
from aichat.context import KEY_POLICY
from aichat.errors import APIError, InvalidRequest, UpstreamError
from aichat.ids import new_id
from aichat.schemas import (
    ChatCompletionRequest,
    parse_chat_request,
    prompt_text,
    read_json,
    validate_body,
)
from aichat.sse import named_event, write_sse
from aichat.state import ROUTER
from aichat.tokens import count_tokens, prompt_tokens

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


class AnthropicMessage(BaseModel):
    """One turn: a string, or a list of content blocks."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesRequest(BaseModel):
    """``POST /v1/messages`` body: what the gateway reads; other fields are kept."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class CountTokensRequest(MessagesRequest):
    """``POST /v1/messages/count_tokens`` body: a message request without ``max_tokens``."""

    max_tokens: int = Field(1, ge=1)


# HTTP status -> Anthropic's error type.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_object(err: APIError) -> dict[str, Any]:
    """``{"type": "error", "error": {...}}``, the body and stream event of a failure."""
    fallback = "invalid_request_error" if err.status < 500 else "api_error"
    kind = _ERROR_TYPES.get(err.status, fallback)
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def error_response(err: APIError) -> web.Response:
    """``err`` as a complete response in Anthropic's shape."""
    return web.json_response(error_object(err), status=err.status, headers=err.headers)


def error_event(err: APIError) -> bytes:
    """The ``error`` event that ends a stream that failed after it started."""
    return named_event("error", error_object(err))


def _text_of(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        return ""
    texts = [b.get("text") for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
    return "\n".join(text for text in texts if isinstance(text, str))


def _image(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidRequest("An image block needs a 'source' object.", code="unsupported_content")
    if source.get("type") == "url":
        url = source.get("url")
    else:
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: dict[str, Any]) -> dict[str, Any]:
    text = _text_of(block.get("content"))
    if block.get("is_error"):
        text = f"Error: {text}"  # chat has no error flag on tool results
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def _user_turn(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    # Tool results answer the previous assistant turn, so they come before the new text.
    results, parts = [], []
    for j, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "tool_result":
            results.append(_tool_result(block))
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image(block))
        else:
            raise _unsupported_block(kind, f"{where}[{j}]")
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _assistant_turn(blocks: list[dict[str, Any]], where: str) -> dict[str, Any]:
    calls = []
    for j, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind not in ("text", "thinking", "redacted_thinking"):
            raise _unsupported_block(kind, f"{where}[{j}]")
    message: dict[str, Any] = {"role": "assistant", "content": _text_of(blocks) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _unsupported_block(kind: Any, where: str) -> InvalidRequest:
    return InvalidRequest(
        f"Content block of type '{kind}' is not supported by this gateway.",
        param=where,
        code="unsupported_content",
    )


def chat_messages(req: MessagesRequest) -> list[dict[str, Any]]:
    """``system`` and ``messages`` as chat-completions messages."""
    messages: list[dict[str, Any]] = []
    if req.system:
        system = req.system if isinstance(req.system, str) else _text_of(req.system)
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(req.messages):
        where = f"messages[{i}].content"
        if isinstance(turn.content, str):
            messages.append({"role": turn.role, "content": turn.content})
        elif turn.role == "user":
            messages.extend(_user_turn(turn.content, where))
        else:
            messages.append(_assistant_turn(turn.content, where))
    return messages


def _tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    if tool.get("type", "custom") != "custom" or not isinstance(tool.get("name"), str):
        raise InvalidRequest(
            f"Tool of type '{tool.get('type')}' is not supported: only client tools with a "
            "name and input_schema are.",
            param=where,
            code="unsupported_tool",
        )
    function = {"name": tool["name"], "parameters": tool.get("input_schema") or {}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _tool_choice(choice: dict[str, Any]) -> str | dict[str, Any]:
    kind = choice.get("type")
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind in _TOOL_CHOICES:
        return _TOOL_CHOICES[kind]
    raise InvalidRequest(f"tool_choice of type '{kind}' is not supported.", param="tool_choice")


def to_chat_request(req: MessagesRequest) -> tuple[ChatCompletionRequest, list[str]]:
    """The chat-completions request for ``req``, and the fields that could not be carried."""
    body: dict[str, Any] = {
        "model": req.model,
        "messages": chat_messages(req),
        "max_tokens": req.max_tokens,
    }
    if req.stream:
        # Pass-through upstreams then report usage, which message_delta carries.
        body.update(stream=True, stream_options={"include_usage": True})
    if req.tools:
        body["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(req.tools)]
    choice = req.tool_choice or {}
    if choice:
        body["tool_choice"] = _tool_choice(choice)
    optional = {
        "stop": req.stop_sequences or None,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "user": (req.metadata or {}).get("user_id"),
        "parallel_tool_calls": False if choice.get("disable_parallel_tool_use") else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    dropped = [k for k, v in (req.model_extra or {}).items() if v is not None]
    return parse_chat_request(body), dropped


# finish_reason -> Anthropic's stop_reason.
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish_reason: str) -> str:
    """Anthropic's ``stop_reason`` for an OpenAI ``finish_reason``."""
    return _STOP_REASONS.get(finish_reason, "end_turn")


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the ``input`` object; an upstream error if they are not one."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError("Upstream produced tool arguments that are not a JSON object.")
    return value


def content_block(block: BlockStart | BlockStop) -> dict[str, Any]:
    """The content block of ``block``: empty when it opens, whole when it has stopped."""
    whole = isinstance(block, BlockStop)
    if block.tool is None:
        return {"type": "text", "text": block.text if isinstance(block, BlockStop) else ""}
    arguments = tool_input(block.tool.arguments) if whole else {}
    return {"type": "tool_use", "id": block.tool.id, "name": block.tool.name, "input": arguments}


def new_message_id() -> str:
    """A fresh ``msg_`` id."""
    return new_id("msg_")


def message_object(req: MessagesRequest, message_id: str, **fields: Any) -> dict[str, Any]:
    """The ``message`` object; ``fields`` fill content, stop reason and usage."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        **fields,
    }


def _usage(end: End) -> dict[str, int]:
    return {"input_tokens": end.usage.prompt_tokens, "output_tokens": end.usage.completion_tokens}


async def whole_message(req: MessagesRequest, blocks: AsyncIterator[BlockEvent]) -> dict[str, Any]:
    """The complete message, once the answer has ended."""
    stops, end = await collect(blocks)
    return message_object(
        req,
        new_message_id(),
        content=[content_block(stop) for stop in stops],
        stop_reason=stop_reason(end.reason),
        usage=_usage(end),
    )


async def stream_events(
    req: MessagesRequest, chat: ChatCompletionRequest, blocks: AsyncIterator[BlockEvent]
) -> AsyncGenerator[bytes, None]:
    """Every event of a streamed message, ending ``message_stop`` only if it finished."""
    # The upstream's own count, when it has one, comes with message_delta at the end.
    usage = {"input_tokens": prompt_tokens(prompt_text(chat)), "output_tokens": 0}
    start = message_object(req, new_message_id(), usage=usage)
    yield named_event("message_start", {"type": "message_start", "message": start})
    yield named_event("ping", {"type": "ping"})
    kind = "text_delta"
    async for block in blocks:
        if isinstance(block, BlockStart):
            data = {
                "type": "content_block_start",
                "index": block.index,
                "content_block": content_block(block),
            }
            yield named_event("content_block_start", data)
            kind = "text_delta" if block.tool is None else "input_json_delta"
        elif isinstance(block, BlockDelta):
            field = "text" if kind == "text_delta" else "partial_json"
            delta = {"type": kind, field: block.text}
            data = {"type": "content_block_delta", "index": block.index, "delta": delta}
            yield named_event("content_block_delta", data)
        elif isinstance(block, BlockStop):
            if block.tool is not None:
                tool_input(block.text)  # a broken call fails the stream instead of reaching you
            data = {"type": "content_block_stop", "index": block.index}
            yield named_event("content_block_stop", data)
        else:
            ending = {"stop_reason": stop_reason(block.reason), "stop_sequence": None}
            data = {"type": "message_delta", "delta": ending, "usage": _usage(block)}
            yield named_event("message_delta", data)
            yield named_event("message_stop", {"type": "message_stop"})


async def create_message(request: web.Request) -> web.StreamResponse:
    """Answer one Anthropic Messages request, streamed or whole."""
    req = validate_body(MessagesRequest, await read_json(request))
    chat, dropped = to_chat_request(req)
    answer, headers = await start_answer(request, chat, dropped)
    async with aclosing(answer.events) as events:
        blocks = segment(answer.first, events, chat)
        if req.stream:
            return await write_sse(request, stream_events(req, chat, blocks), error_event, headers)
        return web.json_response(await whole_message(req, blocks), headers=headers)


async def count_message_tokens(request: web.Request) -> web.Response:
    """``POST /v1/messages/count_tokens``: the request's input tokens, counted locally.

    No upstream is asked (none of them counts for us); the model must exist for the key.
    """
    req = validate_body(CountTokensRequest, await read_json(request))
    request.app[ROUTER].chain(req.model, request[KEY_POLICY].models)
    chat, _ = to_chat_request(req)
    tools = count_tokens(json.dumps(chat.tools)) if chat.tools else 0
    return web.json_response({"input_tokens": prompt_tokens(prompt_text(chat)) + tools})
