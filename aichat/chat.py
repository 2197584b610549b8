"""``POST /v1/chat/completions``: read -> validate -> route -> provider -> translate -> respond."""

from __future__ import annotations

from contextlib import aclosing

from aiohttp import web

from aichat.context import log_field
from aichat.errors import UpstreamError, error_event
from aichat.providers.base import Event
from aichat.schemas import parse_chat_request, read_json
from aichat.sse import write_sse
from aichat.state import PROVIDERS, ROUTER
from aichat.translate import Completion, complete, stream_chunks


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Answer one chat completion, streamed or whole."""
    chat = parse_chat_request(await read_json(request))
    log_field(request, model=chat.model, stream=chat.stream)
    route = request.app[ROUTER].resolve(chat.model)
    provider = request.app[PROVIDERS][route.provider]
    completion = Completion.start(chat.model)
    async with aclosing(provider.stream(chat, route.upstream_model)) as events:
        # Until the first event arrives nothing has been sent: failures are still HTTP errors.
        first: Event | None = await anext(events, None)
        if first is None:
            raise UpstreamError(f"{provider.name} upstream sent no answer.")
        if chat.stream:
            chunks = stream_chunks(first, events, chat, completion)
            return await write_sse(request, chunks, error_event)
        return web.json_response(await complete(first, events, chat, completion))
