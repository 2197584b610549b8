"""The part every inbound API shares: route a request, start an answer, name its headers.

Each inbound API (Chat Completions, Responses, Anthropic Messages) turns its request into a
``ChatCompletionRequest``, calls ``start_answer`` and spells the events in its own format.
Until the first event arrives nothing has been sent: failures are still HTTP errors, and
retries and fallbacks are still possible.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiohttp import web

from aichat.answer.capabilities import DROPPED_HEADER, dropped_header, dropped_params
from aichat.answer.failover import Answer, open_answer
from aichat.answer.state import RETRY_POLICY, ROUTER
from aichat.answer.usage import admit, meter
from aichat.core.context import log_field
from aichat.core.errors import UpstreamError
from aichat.core.schemas import ChatCompletionRequest
from aichat.operations.auth import KEY_POLICY
from aichat.operations.timing import Timed, upstream_called

log = logging.getLogger("aichat.answering")

UPSTREAM_HEADER = "x-aichat-upstream"


async def start_answer(
    request: web.Request, chat: ChatCompletionRequest, dropped: Iterable[str] = ()
) -> tuple[Answer, dict[str, str]]:
    """The started answer to ``chat`` and the response headers that describe it.

    ``dropped`` names request parameters the inbound API could not carry over; parameters
    the answering upstream will not honour are added, logged and reported in a header.
    """
    log_field(request, model=chat.model, stream=chat.stream)
    chain = request.app[ROUTER].chain(chat.model, request[KEY_POLICY].models)
    log_field(request, route=chain[0].name)
    await admit(request)
    upstream_called(request)
    try:
        answer = await open_answer(chain, chat, request.app[RETRY_POLICY])
    except UpstreamError as err:
        # A request that failed on every attempt says where and how often it tried, too.
        log_field(request, upstream=err.upstream, attempts=err.attempts)
        raise
    watcher = meter(request, chat, chain[0].metric_name, answer.target)
    answer.events = Timed(answer.first, answer.events, request, watcher)
    log_field(request, upstream=answer.target.label, attempts=answer.attempts)
    headers = {UPSTREAM_HEADER: answer.target.label}
    ignored = dropped_params(chat.body, answer.target.capabilities, dropped)
    if ignored:
        headers[DROPPED_HEADER] = dropped_header(ignored)
        log.warning(
            "request parameters dropped",
            extra={"fields": {"upstream": answer.target.label, "dropped": headers[DROPPED_HEADER]}},
        )
    return answer, headers
