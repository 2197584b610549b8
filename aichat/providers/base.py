"""The one interface every provider implements, and the neutral events it produces.

A provider turns a request (a ``Prompt``) into an async stream of events. It knows its
upstream's wire format and quirks and nothing about how the answer is sent to the client.
An upstream speaks one of the three APIs (``Provider.api``): a request in that same API goes
to it as the client sent it, and its answer comes back in its own words, as raw events
(``RawChunks``/``RawCompletion`` for Chat Completions, ``RawEvents``/``RawBody`` for the
Responses and Messages APIs), which a client of that API gets as they came. A client of
another API gets them taken apart into the neutral events (``aichat.providers.neutral``) and
spelled in its own API's words, once, in ``aichat.answer``.

Failures before the first event are raised as ``APIError`` (``InvalidRequest`` for requests
the provider cannot serve, ``UpstreamError`` / ``UpstreamTimeout`` for upstream trouble), so
the gateway can still answer with an HTTP error or try a fallback.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Protocol

from aichat.core.errors import UpstreamError
from aichat.core.prompt import Api, Prompt


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
    readers and writers convert.) ``reasoning_tokens`` says how many of ``completion_tokens``
    the model spent reasoning, as the upstream reported them; 0 when it did not say
    (Anthropic never does: its thinking is inside ``output_tokens``).
    """

    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


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


@dataclass(frozen=True, slots=True)
class RawEvents:
    """Server-sent events from an upstream speaking the Responses or Messages API that
    arrived in one read: complete events, as the upstream wrote them (lines end in ``\n``).

    A client of the same API gets ``data`` as it is, with only the model name rewritten;
    ``usage`` is what the upstream has reported so far, ``count`` how many events ``data``
    holds, and ``last`` says the answer's final event is among them.
    """

    api: Api
    data: bytes
    count: int
    last: bool = False
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class RawBody:
    """A whole answer from an upstream speaking the Responses or Messages API, as sent."""

    api: Api
    data: bytes
    usage: Usage | None = None


Event = (
    TextDelta
    | ReasoningDelta
    | ToolCallDelta
    | Finish
    | Usage
    | RawChunks
    | RawCompletion
    | RawEvents
    | RawBody
)


def ends_answer(event: Event) -> bool:
    """Whether the upstream has nothing more to send after ``event``."""
    return isinstance(event, Finish) or (isinstance(event, RawChunks | RawEvents) and event.last)


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
    """An upstream behind one interface; ``api`` is the API it speaks."""

    name: str
    api: Api

    def stream(self, prompt: Prompt, upstream_model: str) -> AsyncGenerator[Event, None]:
        """Events of one answer; must end with ``Finish`` when the answer is complete."""
        ...


class Wrapper:
    """Base of a provider that reworks another's events (reasoning stripped, tools emulated):
    it keeps the inner provider's name, which logs and metrics show, and its API."""

    def __init__(self, inner: Provider) -> None:
        self._inner = inner
        self.name = inner.name
        self.api: Api = inner.api


class Chained:
    """``first`` followed by ``events``: an answer's events as one stream.

    An iterator rather than a generator: a consumer may stop at ``Finish`` and drop it,
    and a dropped generator is closed by the garbage collector through a task of its own;
    this leaves nothing to close (``events`` belongs to the request handler, which closes
    it).
    """

    __slots__ = ("_events", "_first")

    def __init__(self, first: Event, events: AsyncIterator[Event]) -> None:
        self._first: Event | None = first
        self._events = events

    def __aiter__(self) -> Chained:
        return self

    async def __anext__(self) -> Event:
        first = self._first
        if first is None:
            return await self._events.__anext__()
        self._first = None
        return first


class Incomplete(UpstreamError):
    """The upstream's events ended without ``Finish``: the answer must not look complete."""

    def __init__(self) -> None:
        super().__init__("Upstream ended the answer without finishing it.", retryable=False)
