"""``POST /v1/chat/completions``: read -> validate -> respond (route, provider, translate)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from aiohttp import web

from aichat.answer.answering import respond
from aichat.answer.translate import Completion, complete, stream_chunks
from aichat.core.errors import APIError, error_event
from aichat.core.exchange import EXCHANGE
from aichat.core.prompt import Prompt
from aichat.core.schemas import ChatCompletionRequest, parse_chat_request, read_json
from aichat.providers.base import Event


class ChatSpeaker:
    """Chat Completions' words for an answer: chunks and ``[DONE]``, or a completion."""

    __slots__ = ("_chat", "_completion")

    def __init__(self, chat: ChatCompletionRequest) -> None:
        self._chat = chat
        self._completion = Completion.start(chat.model)

    def stream(self, first: Event, events: AsyncIterator[Event]) -> AsyncGenerator[bytes, None]:
        """The chunks of a streamed completion."""
        return stream_chunks(first, events, self._chat, self._completion)

    async def whole(self, first: Event, events: AsyncIterator[Event]) -> bytes:
        """A whole ``chat.completion``."""
        return await complete(first, events, self._chat, self._completion)

    def failed(self, err: APIError) -> bytes:
        """The error event that ends a failed stream (no ``[DONE]``)."""
        return error_event(err)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Answer one chat completion, streamed or whole."""
    chat = parse_chat_request(await read_json(request))
    prompt = Prompt.of_chat(chat, await request.read())
    return await respond(request, request[EXCHANGE], prompt, ChatSpeaker(chat))
