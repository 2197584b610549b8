"""The one interface every provider implements, and the neutral events it produces.

A provider turns a validated request into an async stream of events. It knows its upstream's
wire format and quirks and nothing about how the answer is sent to the client: translation
into OpenAI chunks or a whole completion happens once, in ``aichat.answer.translate``. Upstreams
that already speak OpenAI's format hand over their chunks as ``RawChunks``/``RawCompletion``
rather than being taken apart and rebuilt.

Failures before the first event are raised as ``APIError`` (``InvalidRequest`` for requests
the provider cannot serve, ``UpstreamError`` / ``UpstreamTimeout`` for upstream trouble), so
the gateway can still answer with an HTTP error or try a fallback.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Protocol

from aichat.core.schemas import ChatCompletionRequest


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's reasoning (``reasoning_content``, ``<think>`` text): never
    answer text, though clients may be shown it as thinking."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call, as OpenAI streams them.

    The first piece of call ``index`` carries its ``id`` and ``name``; later pieces carry
    only more ``arguments`` text (JSON, split anywhere).
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Finish:
    """The answer is complete; ``reason`` is OpenAI's ``finish_reason``."""

    reason: str = "stop"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one answer, in OpenAI's sense whatever the upstream's API.

    ``prompt_tokens`` counts every input token, cached or not; ``cache_read_tokens`` and
    ``cache_write_tokens`` say how many of them were read from, or written to, the
    upstream's prompt cache. (Anthropic counts its ``input_tokens`` without either: its
    readers and writers convert.)
    """

    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True, slots=True)
class RawChunks:
    """The ``chat.completion.chunk``s from an OpenAI-compatible upstream that arrived in one
    read, as JSON texts.

    Forwarded as they came, in one write, with only the model name rewritten: fields the
    gateway does not model (tool-call deltas, logprobs, several choices, refusals) reach the
    client intact.
    """

    jsons: tuple[str, ...]
    # ``[DONE]`` came in the same read: only ``Finish`` follows, with nothing to wait for,
    # so a consumer may send its end in the same write.
    last: bool = False
    # The usage one of these chunks reported (taken out when the client did not ask for it).
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class RawCompletion:
    """A whole ``chat.completion`` from an OpenAI-compatible upstream, as JSON text."""

    json: str
    usage: Usage | None = None  # what it reports


Event = TextDelta | ReasoningDelta | ToolCallDelta | Finish | Usage | RawChunks | RawCompletion


def ends_answer(event: Event) -> bool:
    """Whether the upstream has nothing more to send after ``event``."""
    return isinstance(event, Finish) or (isinstance(event, RawChunks) and event.last)


class EventStream(Protocol):
    """An answer's events; ``aclose`` releases the upstream, read to the end or not."""

    def __aiter__(self) -> AsyncIterator[Event]:
        """The stream itself."""
        ...

    def __anext__(self) -> Awaitable[Event]:
        """The next event."""
        ...

    def aclose(self) -> Awaitable[None]:
        """Stop the answer and release its upstream connection."""
        ...


class Provider(Protocol):
    """An upstream behind one interface."""

    name: str

    def stream(
        self, request: ChatCompletionRequest, upstream_model: str
    ) -> AsyncGenerator[Event, None]:
        """Events of one answer; must end with ``Finish`` when the answer is complete."""
        ...


class Wrapper:
    """Base of a provider that reworks another's events (reasoning stripped, tools emulated):
    it keeps the inner provider's name, which logs and metrics show."""

    def __init__(self, inner: Provider) -> None:
        self._inner = inner
        self.name = inner.name
