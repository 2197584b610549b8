"""``POST /v1/chat/completions``: read -> validate -> route -> provider -> translate -> respond."""

from __future__ import annotations

from contextlib import aclosing

from aiohttp import web

from aichat.answer.answering import start_answer
from aichat.answer.sse import write_sse
from aichat.answer.translate import Completion, complete, stream_chunks
from aichat.core.errors import error_event
from aichat.core.schemas import parse_chat_request, read_json


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Answer one chat completion, streamed or whole."""
    chat = parse_chat_request(await read_json(request))
    answer, headers = await start_answer(request, chat)
    completion = Completion.start(chat.model)
    async with aclosing(answer.events) as events:
        if chat.stream:
            chunks = stream_chunks(answer.first, events, chat, completion)
            return await write_sse(request, chunks, error_event, headers)
        body = await complete(answer.first, events, chat, completion)
        return web.Response(body=body, content_type="application/json", headers=headers)
