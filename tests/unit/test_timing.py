"""``Timed``: an answer's events with the upstream's end marked, closable unread."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from aichat.operations.timing import TIMING, Timed, Timing
from aichat.providers.base import Event, Finish, RawChunks, TextDelta


def _request(timing: Timing) -> web.Request:
    request = make_mocked_request("POST", "/v1/chat/completions")
    request[TIMING] = timing
    return request


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
    timing = Timing(arrived=0.0, upstream_called=0.0)
    timed = Timed(RawChunks(("{}",), last=True), events, _request(timing))
    assert timing.upstream_done is not None  # the first event was the upstream's last
    await timed.aclose()
    assert released == [True]


async def test_upstream_done_at_the_last_event() -> None:
    async def provider() -> AsyncGenerator[Event, None]:
        yield TextDelta("b")
        yield Finish()

    timing = Timing(arrived=0.0, upstream_called=0.0)
    timed = Timed(TextDelta("a"), provider(), _request(timing))
    assert isinstance(await anext(timed), TextDelta)
    assert timing.upstream_done is None
    assert isinstance(await anext(timed), Finish)
    assert timing.upstream_done is not None
