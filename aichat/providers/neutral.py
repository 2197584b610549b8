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


async def neutral_events(events: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
    """``events`` with every upstream's own words taken apart into neutral events."""
    reason: str | None = None
    found: Reader | None = None
    async for event in events:
        if isinstance(event, RawEvents | RawBody):
            found = found or reader(event.api)
            parsed = (
                found.stream(event.data)
                if isinstance(event, RawEvents)
                else found.whole(event.data)
            )
            reason = found.reason or reason
            for inner in parsed:
                yield inner
        elif isinstance(event, RawChunks | RawCompletion):
            parsed_all = (
                [chunk_events(text) for text in event.jsons]
                if isinstance(event, RawChunks)
                else [completion_events(event.json)]
            )
            for parsed, event_reason in parsed_all:
                reason = event_reason or reason
                for inner in parsed:
                    yield inner
        elif isinstance(event, Finish):
            yield Finish(reason or event.reason)
        else:
            yield event


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
