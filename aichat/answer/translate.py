"""Provider events -> OpenAI Chat Completions chunks or a whole completion.

Pure translation, no I/O. Chunks from a Chat Completions upstream are forwarded with only
the model renamed; any other answer is taken apart into neutral events and written from
byte templates prepared once per completion: only the text of each delta is JSON-encoded
on the hot path. Reasoning goes out as ``reasoning_content``, as vLLM and DeepSeek send it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from aichat.answer.sse import Final
from aichat.core.errors import APIError, error_event
from aichat.core.ids import new_id
from aichat.core.schemas import ChatCompletionRequest, prompt_text
from aichat.core.tokens import TextTally, count_tokens, prompt_tokens
from aichat.providers.base import (
    Chained,
    Event,
    Finish,
    Incomplete,
    RawChunks,
    RawCompletion,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from aichat.providers.neutral import neutral

DONE = b"data: [DONE]\n\n"


# Compact UTF-8 JSON as bytes, several times faster than json.dumps on the hot path.
_dumps = orjson.dumps


def new_completion_id() -> str:
    """A fresh ``chatcmpl-`` id, one per completion (shared by all its chunks)."""
    return new_id("chatcmpl-")


@dataclass(frozen=True, slots=True)
class Completion:
    """Identity shared by every chunk of one answer."""

    id: str
    created: int
    model: str

    @classmethod
    def start(cls, model: str) -> Completion:
        """A new completion for ``model``, created now (Unix seconds, as OpenAI sends)."""
        return cls(new_completion_id(), int(time.time()), model)


class ChunkEncoder:
    """Serialises ``chat.completion.chunk`` events for one completion."""

    __slots__ = ("_delta_prefix", "_head", "_text_prefix")

    _TEXT_SUFFIX = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def __init__(self, completion: Completion) -> None:
        self._head = (
            b'data: {"id":'
            + _dumps(completion.id)
            + b',"object":"chat.completion.chunk","created":'
            + str(completion.created).encode()
            + b',"model":'
            + _dumps(completion.model)
            + b',"choices":['
        )
        self._delta_prefix = self._head + b'{"index":0,"delta":{'
        self._text_prefix = self._delta_prefix + b'"content":'

    def role(self) -> bytes:
        """First chunk: the assistant role with empty content."""
        return self._delta_prefix + b'"role":"assistant","content":""' + self._TEXT_SUFFIX

    def text(self, text: str) -> bytes:
        """A content delta."""
        return self._text_prefix + _dumps(text) + self._TEXT_SUFFIX

    def reasoning(self, text: str) -> bytes:
        """A reasoning delta, in the ``reasoning_content`` field vLLM and DeepSeek use."""
        return self._delta_prefix + b'"reasoning_content":' + _dumps(text) + self._TEXT_SUFFIX

    def tool_call(self, call: ToolCallDelta) -> bytes:
        """A tool-call delta: id, type and name on a call's first piece, then arguments."""
        return (
            self._delta_prefix
            + b'"tool_calls":'
            + _dumps([tool_call_delta(call)])
            + self._TEXT_SUFFIX
        )

    def finish(self, reason: str) -> bytes:
        """Last choice chunk: empty delta and the finish reason."""
        return (
            self._head
            + b'{"index":0,"delta":{},"logprobs":null,"finish_reason":'
            + _dumps(reason)
            + b"}]}\n\n"
        )

    def usage(self, usage: Usage) -> bytes:
        """The ``stream_options.include_usage`` chunk: no choices, only usage."""
        return self._head + b'],"usage":' + _dumps(usage_dict(usage)) + b"}\n\n"


def tool_call_delta(call: ToolCallDelta) -> dict[str, Any]:
    """OpenAI's streamed ``tool_calls`` entry for one piece of a call."""
    function: dict[str, str] = {"arguments": call.arguments}
    if call.name is not None:
        function = {"name": call.name, **function}
    head: dict[str, Any] = {"index": call.index}
    if call.id is not None:
        head.update(id=call.id, type="function")
    return {**head, "function": function}


class _CallParts:
    """One tool call of a whole answer as its pieces arrive, joined once at the end (``+=``
    on a string kept in a dict copies all of it for every piece)."""

    __slots__ = ("arguments", "id", "names")

    def __init__(self) -> None:
        self.id: str | None = None
        self.names: list[str] = []
        self.arguments: list[str] = []

    def add(self, call: ToolCallDelta) -> None:
        self.id = self.id or call.id
        if call.name:
            self.names.append(call.name)
        self.arguments.append(call.arguments)

    def json(self) -> dict[str, Any]:
        function = {"name": "".join(self.names), "arguments": "".join(self.arguments)}
        return {"id": self.id, "type": "function", "function": function}


def usage_dict(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``usage`` object (OpenAI has no count of tokens written to a cache). Reasoning
    tokens only when the upstream counted some: from one that does not say (Anthropic), a 0
    would claim the model did not think."""
    usage_json: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    }
    if usage.reasoning_tokens:
        usage_json["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return usage_json


def counted_usage(prompt: list[str], completion_tokens: int) -> Usage:
    """Usage counted locally from the prompt's texts and the answer's tokens, for upstreams
    that report none."""
    return Usage(prompt_tokens(prompt), completion_tokens)


# The top-level "model" key of an OpenAI chunk. Quotes inside JSON strings are escaped, so
# this cannot match text in the answer or in tool-call arguments.
_MODEL_KEY = re.compile(r'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def rename_model(json_text: str, model: str) -> str:
    """``json_text`` with its ``model`` value replaced by ``model`` (the name the client used)."""
    return _MODEL_KEY.sub(lambda _: '"model":' + json.dumps(model), json_text, count=1)


class ModelRenamer:
    """``rename_model`` for every chunk of one stream, the regex run once per stream.

    Upstreams repeat the same ``"model":"..."`` in every chunk: once seen, slicing does the
    work, after checking it sits at the first ``"model"`` key, as the regex would find it.
    """

    __slots__ = ("_new", "_old")

    def __init__(self, model: str) -> None:
        self._new = '"model":' + json.dumps(model)
        self._old: str | None = None

    def events(self, jsons: tuple[str, ...]) -> str:
        """SSE ``data:`` events of ``jsons``, each renamed.

        Once the upstream's spelling is known, one replace over all of them does it when it
        occurs once per chunk: quotes inside JSON strings are escaped, so it cannot match
        answer text or tool-call arguments.
        """
        text = "".join([f"data: {json_text}\n\n" for json_text in jsons])
        if self._old is None and (match := _MODEL_KEY.search(text)) is not None:
            self._old = match.group(0)  # the first chunk's spelling: most streams are one read
        if self._old is not None and text.count(self._old) == len(jsons):
            return text.replace(self._old, self._new)
        return "".join([f"data: {self(json_text)}\n\n" for json_text in jsons])

    def __call__(self, text: str) -> str:
        at = text.find('"model"')
        if at < 0:
            return text
        if self._old is not None and text.startswith(self._old, at):
            return text[:at] + self._new + text[at + len(self._old) :]
        match = _MODEL_KEY.search(text)
        if match is None:
            return text
        self._old = match.group(0)
        return text[: match.start()] + self._new + text[match.end() :]


async def _forwarded_chunks(
    first: Event, events: AsyncIterator[Event], completion: Completion
) -> AsyncGenerator[bytes, None]:
    rename = ModelRenamer(completion.model)
    async for event in Chained(first, events):
        if isinstance(event, RawChunks):
            data = rename.events(event.jsons).encode()
            if event.last:  # the end was in the same read: one write for both
                yield Final(data + DONE)
                return
            yield data
        elif isinstance(event, Finish):
            # Now, not once the upstream's body has ended: the client's answer is complete.
            yield Final(DONE)
            return
    raise Incomplete()


async def _translated_chunks(
    first: Event,
    events: AsyncIterator[Event],
    request: ChatCompletionRequest,
    completion: Completion,
) -> AsyncGenerator[bytes, None]:
    encoder = ChunkEncoder(completion)
    want_usage = request.include_usage
    answer = TextTally()  # counted only when the client wants usage
    finish: Finish | None = None
    usage: Usage | None = None
    # The role chunk goes out with the first delta: one write, the first token no later.
    head = encoder.role()
    async with neutral(first, events) as answer_events:
        async for event in answer_events:
            if isinstance(event, TextDelta):
                if want_usage:
                    answer.add(event.text)
                yield head + encoder.text(event.text)
                head = b""
            elif isinstance(event, ToolCallDelta):
                if want_usage:
                    answer.add(event.arguments)
                yield head + encoder.tool_call(event)
                head = b""
            elif isinstance(event, ReasoningDelta):
                if want_usage:
                    answer.add(event.text)
                yield head + encoder.reasoning(event.text)
                head = b""
            elif isinstance(event, Finish):
                finish = event
            elif isinstance(event, Usage):
                usage = event
    if finish is None:
        raise Incomplete()
    # The closing chunks in one write.
    tail = head + encoder.finish(finish.reason)
    if want_usage:
        tail += encoder.usage(usage or counted_usage(prompt_text(request), answer.tokens()))
    yield Final(tail + DONE)


def stream_chunks(
    first: Event,
    events: AsyncIterator[Event],
    request: ChatCompletionRequest,
    completion: Completion,
) -> AsyncGenerator[bytes, None]:
    """SSE bytes of a streamed completion, ending with ``[DONE]`` only when it is complete.

    Provider events become role, content deltas, finish and (if asked) usage chunks;
    chunks from an OpenAI-compatible upstream are forwarded with the model renamed. When
    the events end without ``Finish`` this raises ``UpstreamError`` instead: the caller
    then ends the stream with an error event, never with ``[DONE]``.
    """
    if isinstance(first, RawChunks):
        return _forwarded_chunks(first, events, completion)
    return _translated_chunks(first, events, request, completion)


async def _forwarded_completion(
    first: RawCompletion, events: AsyncIterator[Event], completion: Completion
) -> bytes:
    async for event in Chained(first, events):
        if isinstance(event, Finish):
            return rename_model(first.json, completion.model).encode()
    raise Incomplete()


async def complete(
    first: Event,
    events: AsyncIterator[Event],
    request: ChatCompletionRequest,
    completion: Completion,
) -> bytes:
    """The whole ``chat.completion`` as JSON, once all events have arrived."""
    if isinstance(first, RawCompletion):
        return await _forwarded_completion(first, events, completion)
    texts: list[str] = []
    thoughts: list[str] = []
    parts: dict[int, _CallParts] = {}
    finish: Finish | None = None
    usage: Usage | None = None
    async with neutral(first, events) as answer_events:
        async for event in answer_events:
            if isinstance(event, TextDelta):
                texts.append(event.text)
            elif isinstance(event, ToolCallDelta):
                parts.setdefault(event.index, _CallParts()).add(event)
            elif isinstance(event, ReasoningDelta):
                thoughts.append(event.text)
            elif isinstance(event, Finish):
                finish = event
            elif isinstance(event, Usage):
                usage = event
    if finish is None:
        raise Incomplete()
    text = "".join(texts)
    calls = [call.json() for call in parts.values()]
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        # As OpenAI answers: no text next to tool calls is null, not "".
        message.update(content=text or None, tool_calls=calls)
    arguments = "".join(call["function"]["arguments"] for call in calls)
    counted = count_tokens(text + arguments + "".join(thoughts))
    return _dumps(
        {
            "id": completion.id,
            "object": "chat.completion",
            "created": completion.created,
            "model": completion.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish.reason,
                }
            ],
            "usage": usage_dict(usage or counted_usage(prompt_text(request), counted)),
        }
    )


class ChatSpeaker:
    """Chat Completions' words for an answer: chunks and ``[DONE]``, or a completion."""

    __slots__ = ("_chat", "_completion")

    def __init__(self, chat: ChatCompletionRequest) -> None:
        self._chat = chat
        self._completion = Completion.start(chat.model)

    def stream(self, first: Event, events: AsyncIterator[Event]) -> AsyncGenerator[bytes, None]:
        """The chunks of a streamed completion."""
        return stream_chunks(first, events, self._chat, self._completion)

    async def whole(self, first: Event, events: AsyncIterator[Event]) -> bytes:
        """A whole ``chat.completion``."""
        return await complete(first, events, self._chat, self._completion)

    def failed(self, err: APIError) -> bytes:
        """The error event that ends a failed stream (no ``[DONE]``)."""
        return error_event(err)
