"""The answer path every inbound API shares: route, admit, start, meter and write an answer.

Each inbound API (Chat Completions, Responses, Anthropic Messages) reads its request into a
``Prompt`` and calls ``respond`` once, with the request's ``Exchange`` and the ``Speaker``
that spells answers in its words; everything after that goes down the layers from here.
Until the first event arrives nothing has been sent: failures are still HTTP errors, and
retries and fallbacks are still possible.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Protocol

from aiohttp import web

from aichat.answer.capabilities import DROPPED_HEADER, dropped_header, dropped_params
from aichat.answer.failover import open_answer
from aichat.answer.sse import write_sse
from aichat.answer.state import RETRY_POLICY, ROUTER
from aichat.answer.usage import admit, meter, release
from aichat.core.errors import APIError, UpstreamError
from aichat.core.exchange import Exchange
from aichat.core.prompt import Prompt
from aichat.operations.timing import Timed
from aichat.providers.base import Event

log = logging.getLogger("aichat.answering")

UPSTREAM_HEADER = "x-aichat-upstream"


class Speaker(Protocol):
    """How one inbound API spells an answer's events for its client."""

    def stream(self, first: Event, events: AsyncIterator[Event]) -> AsyncGenerator[bytes, None]:
        """The server-sent events of a streamed answer, ending honestly."""
        ...

    async def whole(self, first: Event, events: AsyncIterator[Event]) -> bytes:
        """The JSON body of a whole answer."""
        ...

    def failed(self, err: APIError) -> bytes:
        """The event that ends a stream that failed after it started."""
        ...


async def respond(
    request: web.Request, exchange: Exchange, prompt: Prompt, speaker: Speaker
) -> web.StreamResponse:
    """Answer ``prompt`` for ``exchange``, streamed or whole, in ``speaker``'s words.

    Parameters the answering upstream will not get (its API has no place for them, or it
    ignores them) are logged and named in a header.
    """
    app = request.app
    exchange.note(model=prompt.model, stream=prompt.stream)
    router = app[ROUTER]
    chain = router.chain(prompt.model, exchange.key.models)
    route = chain[0].name
    exchange.note(route=route)
    holds = await admit(app, exchange, prompt, chain)
    exchange.upstream_called = time.perf_counter()
    try:
        policy, larger = app[RETRY_POLICY], router.larger(chain[0])
        answer = await open_answer(chain, prompt, policy, exchange.trace, larger)
    except BaseException as err:
        release(app, holds)  # no answer: nothing to charge
        if isinstance(err, UpstreamError):
            # A request that failed on every attempt says where and how often it tried, too.
            exchange.note(upstream=err.upstream, attempts=err.attempts)
        raise
    target = answer.target
    exchange.note(upstream=target.label, attempts=answer.attempts)
    headers = {UPSTREAM_HEADER: target.label}
    ignored = dropped_params(prompt, target.provider.api, target.capabilities)
    if ignored:
        headers[DROPPED_HEADER] = dropped_header(ignored)
        if exchange.trace is not None:
            exchange.trace.dropped(ignored)
        log.warning(
            "request parameters dropped",
            extra={"fields": {"upstream": target.label, "dropped": headers[DROPPED_HEADER]}},
        )
    watcher = meter(app, exchange, prompt, chain[0].metric_name, target, holds)
    events = Timed(answer.first, answer.events, exchange, watcher)
    async with aclosing(events):
        if prompt.stream:
            chunks = speaker.stream(answer.first, events)
            return await write_sse(request, exchange, chunks, speaker.failed, headers)
        body = await speaker.whole(answer.first, events)
        return web.Response(body=body, content_type="application/json", headers=headers)
