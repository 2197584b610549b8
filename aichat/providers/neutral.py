"""Any upstream's answer -> the neutral events, for a client of another API.

Chat Completions chunks (``openai_events``), Responses events (``responses_events``) and
Messages events (``anthropic_events``) are taken apart here, once, whatever the client's API.
The answer is complete only at the provider's own ``Finish``, which gets the finish reason
the upstream gave: a final event followed by a broken connection is still an unfinished
answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Protocol

from aichat.core.prompt import Api
from aichat.providers.anthropic_events import MessagesReader
from aichat.providers.base import (
    Chained,
    Event,
    Finish,
    RawBody,
    RawChunks,
    RawCompletion,
    RawEvents,
)
from aichat.providers.openai_events import chunk_events, completion_events
from aichat.providers.responses_events import ResponsesReader


class Reader(Protocol):
    """Reads one answer of one API; ``reason`` is its finish reason once known."""

    reason: str | None

    def stream(self, data: bytes) -> list[Event]:
        """The events of complete server-sent events."""
        ...

    def whole(self, data: bytes) -> list[Event]:
        """The events of a whole answer."""
        ...


def reader(api: Api) -> Reader:
    """A reader for an answer in ``api`` (Responses or Messages)."""
    return MessagesReader() if api == "messages" else ResponsesReader()


def is_raw(event: Event) -> bool:
    """Whether ``event`` is an upstream's own words rather than a neutral event."""
    return isinstance(event, RawChunks | RawCompletion | RawEvents | RawBody)


class Parts:
    """Takes an answer's events apart into neutral events, one upstream event at a time.

    Synchronous, so that a consumer sees which neutral events one upstream event (one read
    of a stream) held: a translated stream writes what one read brought in one write.
    """

    __slots__ = ("_reader", "_reason")

    def __init__(self) -> None:
        self._reason: str | None = None
        self._reader: Reader | None = None

    def of(self, event: Event) -> list[Event]:
        """The neutral events of ``event``; ``Finish`` with the upstream's finish reason."""
        if isinstance(event, RawEvents | RawBody):
            found = self._reader = self._reader or reader(event.api)
            parsed = (
                found.stream(event.data)
                if isinstance(event, RawEvents)
                else found.whole(event.data)
            )
            self._reason = found.reason or self._reason
            return parsed
        if isinstance(event, RawChunks):
            inner: list[Event] = []
            for text in event.jsons:
                chunk, reason = chunk_events(text)
                self._reason = reason or self._reason
                inner += chunk
            return inner
        if isinstance(event, RawCompletion):
            whole, reason = completion_events(event.json)
            self._reason = reason or self._reason
            return whole
        if isinstance(event, Finish):
            return [Finish(self._reason or event.reason)]
        return [event]


async def neutral_events(events: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
    """``events`` with every upstream's own words taken apart into neutral events."""
    parts = Parts()
    async for event in events:
        for inner in parts.of(event):
            yield inner


@asynccontextmanager
async def neutral(
    first: Event, events: AsyncIterator[Event]
) -> AsyncIterator[AsyncIterator[Event]]:
    """``first`` and ``events`` as one stream of neutral events, closed on the way out."""
    if not is_raw(first):
        yield Chained(first, events)  # a provider's own neutral events: nothing to take apart
        return
    async with aclosing(neutral_events(Chained(first, events))) as parsed:
        yield parsed
