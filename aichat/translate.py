"""Provider events -> OpenAI Chat Completions chunks or a whole completion.

Pure translation, no I/O. Streamed chunks are written from byte templates prepared once per
completion: only the text of each delta is JSON-encoded on the hot path.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aichat.errors import UpstreamError
from aichat.providers.base import Event, Finish, TextDelta, Usage
from aichat.schemas import ChatCompletionRequest
from aichat.tokens import count_tokens, prompt_tokens

DONE = b"data: [DONE]\n\n"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def new_completion_id() -> str:
    """A fresh ``chatcmpl-`` id, one per completion (shared by all its chunks)."""
    return "chatcmpl-" + secrets.token_hex(12)


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


def usage_dict(usage: Usage) -> dict[str, int]:
    """OpenAI's ``usage`` object."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def prompt_text(request: ChatCompletionRequest) -> list[str]:
    """The text of each message, for counting prompt tokens (non-text parts skipped)."""
    texts = []
    for message in request.messages:
        content = message.content
        if isinstance(content, list):
            texts.append("\n".join(part.text for part in content if part.text is not None))
        else:
            texts.append(content or "")
    return texts


def counted_usage(request: ChatCompletionRequest, answer: str) -> Usage:
    """Usage counted locally, for upstreams that report none."""
    return Usage(prompt_tokens(prompt_text(request)), count_tokens(answer))


class _Incomplete(UpstreamError):
    def __init__(self) -> None:
        super().__init__("Upstream ended the answer without finishing it.", retryable=False)


async def stream_chunks(
    first: Event,
    events: AsyncIterator[Event],
    request: ChatCompletionRequest,
    completion: Completion,
) -> AsyncIterator[bytes]:
    """SSE bytes of a streamed completion: role, deltas, finish, optional usage, ``[DONE]``.

    Raises ``UpstreamError`` instead of finishing when the events end without ``Finish``:
    the caller then ends the stream with an error event, never with ``[DONE]``.
    """
    encoder = ChunkEncoder(completion)
    want_usage = request.include_usage
    answer: list[str] = []
    finish: Finish | None = None
    usage: Usage | None = None
    yield encoder.role()
    event: Event | None = first
    while event is not None:
        if isinstance(event, TextDelta):
            if want_usage:
                answer.append(event.text)
            yield encoder.text(event.text)
        elif isinstance(event, Finish):
            finish = event
        else:
            usage = event
        event = await anext(events, None)
    if finish is None:
        raise _Incomplete()
    yield encoder.finish(finish.reason)
    if want_usage:
        yield encoder.usage(usage or counted_usage(request, "".join(answer)))
    yield DONE


async def complete(
    first: Event,
    events: AsyncIterator[Event],
    request: ChatCompletionRequest,
    completion: Completion,
) -> dict[str, Any]:
    """The whole ``chat.completion`` object, built once all events have arrived."""
    parts: list[str] = []
    finish: Finish | None = None
    usage: Usage | None = None
    event: Event | None = first
    while event is not None:
        if isinstance(event, TextDelta):
            parts.append(event.text)
        elif isinstance(event, Finish):
            finish = event
        else:
            usage = event
        event = await anext(events, None)
    if finish is None:
        raise _Incomplete()
    text = "".join(parts)
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish.reason,
            }
        ],
        "usage": usage_dict(usage or counted_usage(request, text)),
    }
