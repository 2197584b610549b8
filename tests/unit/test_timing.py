"""``Timed``: an answer's events with the upstream's end marked, closable unread."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from aichat.core.exchange import Exchange
from aichat.operations.timing import Timed
from aichat.providers.base import Event, Finish, RawChunks, TextDelta


def _exchange() -> Exchange:
    return Exchange("id", arrived=0.0, upstream_called=0.0)


async def test_closing_an_unread_answer_closes_the_provider() -> None:
    # An answer complete in its first event is never read further: closing must still
    # release the provider (and its upstream connection) here, not in the garbage collector.
    released = []

    async def provider() -> AsyncGenerator[Event, None]:
        try:
            yield Finish()
        finally:
            released.append(True)

    events = provider()
    await anext(events)  # where the provider stands after its first event
    exchange = _exchange()
    timed = Timed(RawChunks(("{}",), last=True), events, exchange)
    assert exchange.upstream_done is not None  # the first event was the upstream's last
    await timed.aclose()
    assert released == [True]


async def test_upstream_done_at_the_last_event() -> None:
    async def provider() -> AsyncGenerator[Event, None]:
        yield TextDelta("b")
        yield Finish()

    exchange = _exchange()
    timed = Timed(TextDelta("a"), provider(), exchange)
    assert isinstance(await anext(timed), TextDelta)
    assert exchange.upstream_done is None
    assert isinstance(await anext(timed), Finish)
    assert exchange.upstream_done is not None
