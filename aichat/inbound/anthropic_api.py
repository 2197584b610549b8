"""``POST /v1/messages``: Anthropic's Messages API.

A route whose upstream speaks Messages gets the request as it was sent (only ``model``,
``stream`` and ``max_tokens`` are read here, and the client's ``anthropic-beta`` and
``anthropic-version`` headers go with it), and its answer comes back as the upstream sent
it. For any other upstream the request becomes a ``ChatCompletionRequest`` (``system`` a
system message, ``system`` turns inside ``messages`` system messages at their place,
``tool_use`` blocks tool calls, ``tool_result`` blocks tool messages); the answer's content
blocks become ``text``, ``tool_use`` and — when the request enables thinking — ``thinking``
blocks, from the upstream's reasoning. Server tools, schema-less Anthropic tools,
``cache_control`` breakpoints and the records of server tools in earlier turns are dropped
and reported; earlier thinking is never sent upstream as text. Streams are Anthropic's named
events: ``message_start``, ``ping``, ``content_block_start``/``_delta``/``_stop``,
``message_delta`` with the stop reason and usage, and ``message_stop`` only when the
upstream finished; a failure after the start ends with an ``error`` event instead. Every
error on this path, 401 included, is in Anthropic's shape: ``{"type": "error", "error":
{"type", "message"}}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

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
from aichat.answer.state import ROUTER
from aichat.core.errors import APIError, ContextOverflow, InvalidRequest, UpstreamError
from aichat.core.exchange import EXCHANGE
from aichat.core.ids import new_id
from aichat.core.prompt import Prompt
from aichat.core.schemas import (
    ChatCompletionRequest,
    Validated,
    parse_chat_request,
    parse_json,
    prompt_text,
    read_json,
    routing_fields,
    validate_body,
)
from aichat.core.tokens import count_tokens, prompt_tokens
from aichat.providers.anthropic import FORWARDED_HEADERS
from aichat.providers.base import Event, RawBody, RawEvents, Usage

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


class AnthropicMessage(BaseModel):
    """One turn: a string, or a list of content blocks."""

    model_config = ConfigDict(extra="allow", strict=True)

    # ``system`` mid-conversation: instructions at that point of the conversation.
    role: Literal["user", "assistant", "system"]
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
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None

    @property
    def shows_thinking(self) -> bool:
        """Whether the client asked for thinking blocks (and not for them to be omitted)."""
        thinking = self.thinking or {}
        enabled = thinking.get("type") in ("enabled", "adaptive")
        return enabled and thinking.get("display") != "omitted"


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


# Anthropic's own error types: an upstream's is kept when it is one of them (its 529
# ``overloaded_error``, say), so that a client sees what Anthropic would have said.
_KNOWN_TYPES = frozenset({*_ERROR_TYPES.values(), "api_error", "billing_error"})


def error_object(err: APIError) -> dict[str, Any]:
    """``{"type": "error", "error": {...}}``, the body and stream event of a failure."""
    fallback = "invalid_request_error" if err.status < 500 else "api_error"
    kind = _ERROR_TYPES.get(err.status, fallback)
    if isinstance(err, UpstreamError) and err.type in _KNOWN_TYPES:
        kind = err.type
    # Claude Code compacts its conversation on this message, in Anthropic's words.
    message = err.prompt_too_long() if isinstance(err, ContextOverflow) else err.message
    return {"type": "error", "error": {"type": kind, "message": message}}


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


# Blocks that record a server tool's work (web search, code execution, …) in an earlier turn:
# a chat upstream has no such tools, and their results no place to go. (A client tool's
# result is ``tool_result``, which this suffix does not match.)
_SERVER_BLOCK_SUFFIX = "_tool_result"
_SERVER_BLOCKS = frozenset({"server_tool_use", "container_upload", "mcp_tool_use"})
_THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def _document(block: dict[str, Any], where: str) -> dict[str, Any]:
    """A document as text, where it is text; a PDF or a file reference cannot be read here."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "text" and isinstance(source, dict):
        text = str(source.get("data", ""))
    elif kind == "content" and isinstance(source, dict):
        text = _text_of(source.get("content"))
    else:
        raise InvalidRequest(
            f"Document source of type '{kind}' is not supported: send text documents.",
            param=where,
            code="unsupported_content",
        )
    title = block.get("title")
    return {"type": "text", "text": f"{title}\n\n{text}" if isinstance(title, str) else text}


def _search_result(block: dict[str, Any]) -> dict[str, Any]:
    heading = f"{block.get('title', '')} ({block.get('source', '')})"
    return {"type": "text", "text": f"{heading}\n{_text_of(block.get('content'))}"}


def _skipped(kind: Any, dropped: list[str]) -> bool:
    """Whether a block is left out: earlier thinking (silently), server tool records (said)."""
    if kind in _THINKING_BLOCKS:
        return True  # context for the client, never answer text upstream
    if kind in _SERVER_BLOCKS or str(kind).endswith(_SERVER_BLOCK_SUFFIX):
        dropped.append(f"messages.content.{kind}")
        return True
    return False


def _user_turn(
    blocks: list[dict[str, Any]], where: str, dropped: list[str]
) -> list[dict[str, Any]]:
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
        elif kind == "document":
            parts.append(_document(block, f"{where}[{j}]"))
        elif kind == "search_result":
            parts.append(_search_result(block))
        elif not _skipped(kind, dropped):
            raise _unsupported_block(kind, f"{where}[{j}]")
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _assistant_turn(blocks: list[dict[str, Any]], where: str, dropped: list[str]) -> dict[str, Any]:
    calls, texts = [], []
    for j, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind == "text":
            texts.append(block)
        elif not _skipped(kind, dropped):
            raise _unsupported_block(kind, f"{where}[{j}]")
    message: dict[str, Any] = {"role": "assistant", "content": _text_of(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _system_turn(content: str | list[dict[str, Any]], where: str) -> dict[str, Any]:
    for j, block in enumerate(content if isinstance(content, list) else ()):
        if block.get("type") != "text":
            raise _unsupported_block(block.get("type"), f"{where}[{j}]")
    return {"role": "system", "content": _text_of(content)}


def _unsupported_block(kind: Any, where: str) -> InvalidRequest:
    return InvalidRequest(
        f"Content block of type '{kind}' is not supported by this gateway.",
        param=where,
        code="unsupported_content",
    )


def chat_messages(req: MessagesRequest, dropped: list[str]) -> list[dict[str, Any]]:
    """``system`` and ``messages`` as chat-completions messages, in order.

    A ``system`` turn inside ``messages`` stays where it is, as a system message. Blocks
    left out are named in ``dropped``.
    """
    messages: list[dict[str, Any]] = []
    if req.system:
        system = req.system if isinstance(req.system, str) else _text_of(req.system)
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(req.messages):
        where = f"messages[{i}].content"
        if turn.role == "system":
            messages.append(_system_turn(turn.content, where))
        elif isinstance(turn.content, str):
            messages.append({"role": turn.role, "content": turn.content})
        elif turn.role == "user":
            messages.extend(_user_turn(turn.content, where, dropped))
        else:
            messages.append(_assistant_turn(turn.content, where, dropped))
    return messages


def _tools(tools: list[dict[str, Any]], dropped: list[str]) -> list[dict[str, Any]]:
    """Client tools as functions. Tools with a type of their own — server tools, and the
    schema-less client tools (bash, text editor, memory, computer) only Claude knows the
    schema of — have no chat equivalent: dropped and reported."""
    functions = []
    for tool in tools:
        kind = tool.get("type") or "custom"
        if kind != "custom" or not isinstance(tool.get("name"), str):
            dropped.append(f"tools.{kind}")
            continue
        function = {"name": tool["name"], "parameters": tool.get("input_schema") or {}}
        if tool.get("description"):
            function["description"] = tool["description"]
        functions.append({"type": "function", "function": function})
    return functions


_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _tool_choice(choice: dict[str, Any]) -> str | dict[str, Any]:
    kind = choice.get("type")
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind in _TOOL_CHOICES:
        return _TOOL_CHOICES[kind]
    raise InvalidRequest(f"tool_choice of type '{kind}' is not supported.", param="tool_choice")


# Anthropic's effort levels beyond OpenAI's highest.
_EFFORTS = {"xhigh": "high", "max": "high"}


def _output_config(config: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    """``output_config`` as chat fields: effort as ``reasoning_effort``, a JSON schema
    format as ``response_format``."""
    fields: dict[str, Any] = {}
    effort = config.get("effort")
    if isinstance(effort, str):
        fields["reasoning_effort"] = _EFFORTS.get(effort, effort)
    fmt = config.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {"name": "output", "schema": fmt.get("schema") or {}, "strict": True}
        fields["response_format"] = {"type": "json_schema", "json_schema": schema}
    dropped += [f"output_config.{k}" for k, v in config.items() if k not in ("effort", "format")]
    return fields


def _marked(blocks: Any) -> bool:
    """Whether one of ``blocks`` (if a list) carries a ``cache_control`` breakpoint."""
    for block in blocks if isinstance(blocks, list) else ():  # a loop: no generator to resume
        if isinstance(block, dict) and "cache_control" in block:
            return True
    return False


def _cache_marked(req: MessagesRequest) -> bool:
    """Whether a ``system`` block, a tool or a content block (a tool result's own blocks
    included) carries a ``cache_control`` breakpoint.

    Looked for where clients put them first (Claude Code: ``system``), stopping at the
    first: collecting every block of a coding agent's request before looking cost 30k
    instructions a request, 0.7% of a translated one (``bench.instructions``).
    """
    if _marked(req.system) or _marked(req.tools):
        return True
    for turn in req.messages:
        if _marked(turn.content):
            return True
        for block in turn.content if isinstance(turn.content, list) else ():
            if block.get("type") == "tool_result" and _marked(block.get("content")):
                return True
    return False


def to_chat_request(req: MessagesRequest) -> tuple[ChatCompletionRequest, list[str]]:
    """The chat-completions request for ``req``, and the fields that could not be carried.

    ``thinking`` is not sent upstream (chat has no thinking budget); it decides whether
    the upstream's reasoning comes back as thinking blocks (``shows_thinking``).
    ``cache_control`` breakpoints have no place in Chat Completions: named once, as dropped.
    """
    dropped = [k for k, v in (req.model_extra or {}).items() if v is not None]
    if _cache_marked(req) and "cache_control" not in dropped:  # not also given at the top
        dropped.append("cache_control")
    body: dict[str, Any] = {
        "model": req.model,
        "messages": chat_messages(req, dropped),
        "max_tokens": req.max_tokens,
    }
    if req.stream:
        # Pass-through upstreams then report usage, which message_delta carries.
        body.update(stream=True, stream_options={"include_usage": True})
    tools = _tools(req.tools or [], dropped)
    choice = req.tool_choice or {}
    if tools:
        body["tools"] = tools
        if choice:
            body["tool_choice"] = _tool_choice(choice)
    optional = {
        "stop": req.stop_sequences or None,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "user": (req.metadata or {}).get("user_id"),
        "parallel_tool_calls": False if choice.get("disable_parallel_tool_use") else None,
        **_output_config(req.output_config or {}, dropped),
    }
    body.update({k: v for k, v in optional.items() if v is not None})
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


# Anthropic signs thinking so that it can check it when a client sends it back; aichat
# cannot sign for the upstream and does not check, so this only says where it came from.
SIGNATURE = "aichat-unsigned"


def content_block(block: BlockStart | BlockStop) -> dict[str, Any]:
    """The content block of ``block``: empty when it opens, whole when it has stopped."""
    whole = isinstance(block, BlockStop)
    if block.reasoning:
        thinking = block.text if isinstance(block, BlockStop) else ""
        return {"type": "thinking", "thinking": thinking, "signature": SIGNATURE if whole else ""}
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


def usage_object(usage: Usage) -> dict[str, int]:
    """Anthropic's ``usage``: ``input_tokens`` counts what was neither read from nor written to
    the prompt cache, as Anthropic defines it."""
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    return {
        "input_tokens": max(0, usage.prompt_tokens - cached),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.completion_tokens,
    }


async def whole_message(
    req: MessagesRequest, blocks: AsyncIterator[list[BlockEvent]]
) -> dict[str, Any]:
    """The complete message, once the answer has ended."""
    stops, end = await collect(blocks)
    return message_object(
        req,
        new_message_id(),
        content=[content_block(stop) for stop in stops],
        stop_reason=stop_reason(end.reason),
        usage=usage_object(end.usage),
    )


def _delta_type(block: BlockStart) -> tuple[str, str]:
    """The delta type of ``block``'s pieces and the field they go in."""
    if block.reasoning:
        return "thinking_delta", "thinking"
    if block.tool is None:
        return "text_delta", "text"
    return "input_json_delta", "partial_json"


class _MessagesWriter:
    """Spells block events as Anthropic's named events, remembering the open block's kind."""

    __slots__ = ("_field", "_kind")

    def __init__(self) -> None:
        self._kind, self._field = "text_delta", "text"

    def events(self, block: BlockEvent) -> bytes:
        """The events of one block event (``message_delta`` and ``message_stop`` for ``End``)."""
        if isinstance(block, BlockStart):
            data = {
                "type": "content_block_start",
                "index": block.index,
                "content_block": content_block(block),
            }
            self._kind, self._field = _delta_type(block)
            return named_event("content_block_start", data)
        if isinstance(block, BlockDelta):
            delta = {"type": self._kind, self._field: block.text}
            data = {"type": "content_block_delta", "index": block.index, "delta": delta}
            return named_event("content_block_delta", data)
        if isinstance(block, BlockStop):
            out = b""
            if block.tool is not None:
                tool_input(block.text)  # a broken call fails the stream instead of reaching you
            if block.reasoning:
                signed = {"type": "signature_delta", "signature": SIGNATURE}
                data = {"type": "content_block_delta", "index": block.index, "delta": signed}
                out = named_event("content_block_delta", data)
            data = {"type": "content_block_stop", "index": block.index}
            return out + named_event("content_block_stop", data)
        ending = {"stop_reason": stop_reason(block.reason), "stop_sequence": None}
        data = {"type": "message_delta", "delta": ending, "usage": usage_object(block.usage)}
        return named_event("message_delta", data) + named_event(
            "message_stop", {"type": "message_stop"}
        )


async def stream_events(
    req: MessagesRequest, prompt: Prompt, blocks: AsyncGenerator[list[BlockEvent], None]
) -> AsyncGenerator[bytes, None]:
    """Every event of a streamed message, ending ``message_stop`` only if it finished; the
    events of one upstream read together, in one write.

    ``blocks`` is closed here: the stream's end leaves with ``message_stop``, before the
    blocks' generator has seen that it is over.
    """
    # The upstream's own count, when it has one, comes with message_delta at the end.
    usage = {"input_tokens": prompt_tokens(prompt.texts()), "output_tokens": 0}
    start = message_object(req, new_message_id(), usage=usage)
    message_start = named_event("message_start", {"type": "message_start", "message": start})
    yield message_start + named_event("ping", {"type": "ping"})
    writer = _MessagesWriter()
    async with aclosing(blocks):
        async for found in blocks:
            data = b"".join([writer.events(block) for block in found])
            if isinstance(found[-1], End):
                yield Final(data)  # with the end of the body
                return
            yield data


def messages_prompt(
    request: Validated[MessagesRequest], raw: bytes, headers: Mapping[str, str]
) -> Prompt:
    """A Messages request as the answer path carries it: validated and translated to Chat
    Completions only for an upstream of another API."""
    body = request.body
    model, stream, max_tokens = routing_fields(body, "max_tokens")

    def to_chat() -> tuple[ChatCompletionRequest, list[str]]:
        return to_chat_request(request())

    given = {name: headers[name] for name in FORWARDED_HEADERS if name in headers}
    return Prompt("messages", model, stream, body, raw, to_chat, max_tokens, given)


class MessagesSpeaker:
    """Anthropic's words for an answer: its named events, or a whole ``message``."""

    __slots__ = ("_limit", "_prompt", "_req")

    def __init__(self, prompt: Prompt, request: Validated[MessagesRequest], limit: float) -> None:
        self._prompt = prompt
        self._req = request  # validated once, shared with the translation
        self._limit = limit  # characters of an answer kept to repeat at its end

    def _blocks(
        self, first: Event, events: AsyncIterator[Event]
    ) -> AsyncGenerator[list[BlockEvent], None]:
        # A whole message holds its blocks' text; a stream repeats only tool calls' input.
        return segment(
            first,
            events,
            self._prompt,
            self._req().shows_thinking,
            limit=self._limit,
            texts=not self._prompt.stream,
        )

    def stream(self, first: Event, events: AsyncIterator[Event]) -> AsyncGenerator[bytes, None]:
        """The events of a streamed message: the upstream's own, when it speaks Messages."""
        if isinstance(first, RawEvents) and first.api == "messages":
            return forward_events(first, events, self._prompt.model)
        return stream_events(self._req(), self._prompt, self._blocks(first, events))

    async def whole(self, first: Event, events: AsyncIterator[Event]) -> bytes:
        """A whole message: the upstream's own, when it speaks Messages."""
        if isinstance(first, RawBody) and first.api == "messages":
            return await forward_body(first, events, self._prompt.model)
        message = await whole_message(self._req(), self._blocks(first, events))
        return orjson.dumps(message)

    def failed(self, err: APIError) -> bytes:
        """The ``error`` event: the upstream's own, when it speaks Messages."""
        return verbatim_or(err, "messages") or error_event(err)


async def create_message(request: web.Request) -> web.StreamResponse:
    """Answer one Anthropic Messages request, streamed or whole."""
    # Read exactly only if translated: untranslated, its bytes go upstream as sent.
    raw = await request.read()  # raises 413 past client_max_size
    body = Validated(MessagesRequest, parse_json(raw, exact=False), raw)
    prompt = messages_prompt(body, raw, request.headers)
    speaker = MessagesSpeaker(prompt, body, request.app[LIVE].settings.max_answer_bytes)
    return await respond(request, request[EXCHANGE], prompt, speaker)


async def count_message_tokens(request: web.Request) -> web.Response:
    """``POST /v1/messages/count_tokens``: the request's input tokens, counted locally.

    No upstream is asked (none of them counts for us); the model must exist for the key.
    """
    req = validate_body(CountTokensRequest, await read_json(request))
    request.app[ROUTER].chain(req.model, request[EXCHANGE].key.models)
    chat, _ = to_chat_request(req)
    tools = count_tokens(json.dumps(chat.tools)) if chat.tools else 0
    return web.json_response({"input_tokens": prompt_tokens(prompt_text(chat)) + tools})
