"""``POST /v1/chat/completions``: read -> validate -> respond (route, provider, translate)."""

from __future__ import annotations

from aiohttp import web

from aichat.answer.answering import respond
from aichat.answer.translate import ChatSpeaker
from aichat.core.exchange import EXCHANGE
from aichat.core.prompt import Prompt
from aichat.core.schemas import parse_chat_request, read_json


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Answer one chat completion, streamed or whole."""
    chat = parse_chat_request(await read_json(request))
    prompt = Prompt.of_chat(chat, await request.read())
    return await respond(request, request[EXCHANGE], prompt, ChatSpeaker(chat))
