"""``POST /v1/chat/completions``: read -> validate -> route -> provider -> translate -> respond."""

from __future__ import annotations

from contextlib import aclosing

from aiohttp import web

from aichat.context import log_field
from aichat.errors import error_event
from aichat.failover import open_answer
from aichat.schemas import parse_chat_request, read_json
from aichat.sse import write_sse
from aichat.state import RETRY_POLICY, ROUTER
from aichat.translate import Completion, complete, stream_chunks

UPSTREAM_HEADER = "x-aichat-upstream"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Answer one chat completion, streamed or whole."""
    chat = parse_chat_request(await read_json(request))
    log_field(request, model=chat.model, stream=chat.stream)
    chain = request.app[ROUTER].chain(chat.model)
    # Until the first event arrives nothing has been sent: failures are still HTTP errors,
    # and retries and fallbacks are still possible.
    answer = await open_answer(chain, chat, request.app[RETRY_POLICY])
    log_field(request, upstream=answer.target.label, attempts=answer.attempts)
    headers = {UPSTREAM_HEADER: answer.target.label}
    completion = Completion.start(chat.model)
    async with aclosing(answer.events) as events:
        if chat.stream:
            chunks = stream_chunks(answer.first, events, chat, completion)
            return await write_sse(request, chunks, error_event, headers)
        body = await complete(answer.first, events, chat, completion)
        return web.Response(body=body, content_type="application/json", headers=headers)
