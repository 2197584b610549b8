"""A client's request as the answer path carries it: in the client's own API, translated
only for an upstream that speaks another.

Decisions:

- Three APIs come in (Chat Completions, Responses, Anthropic Messages) and upstreams speak
  one of the same three. A request keeps its client's API, body and bytes; an upstream that
  speaks that API gets the bytes as sent, with only the model rewritten, so nothing the
  gateway does not model is lost on the way. Only what routing, limits, budgets and usage
  need is read from it: ``model``, ``stream`` and the answer's token limit.
- The Chat Completions form is the neutral one: an upstream of another API is reached by
  way of it. Its translation is made when an upstream first needs it (never for a request
  whose upstream speaks the client's API) and kept for later attempts; what it could not
  carry is kept per target API, for the ``x-aichat-dropped-params`` header.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aichat.core.errors import APIError
from aichat.core.schemas import ChatCompletionRequest, prompt_text

Api = Literal["chat", "responses", "messages"]

ChatTranslation = Callable[[], tuple[ChatCompletionRequest, list[str]]]


@dataclass(slots=True)
class Prompt:
    """One request, in the API ``api`` it came in.

    ``body`` is the parsed JSON and ``raw`` its bytes, both as the client sent them;
    ``headers`` are the client's headers an upstream of the same API is given (Anthropic's
    ``anthropic-beta``, say). ``to_chat`` translates it to Chat Completions, once.
    """

    api: Api
    model: str
    stream: bool
    body: dict[str, Any]
    raw: bytes
    to_chat: ChatTranslation
    max_tokens: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    _chat: ChatCompletionRequest | None = None
    _dropped: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of_chat(cls, chat: ChatCompletionRequest, raw: bytes) -> Prompt:
        """A Chat Completions request, already validated."""
        prompt = cls(
            "chat",
            chat.model,
            chat.stream,
            chat.body,
            raw,
            lambda: (chat, []),
            chat.max_completion_tokens or chat.max_tokens,
        )
        prompt._chat = chat
        prompt._dropped["chat"] = []
        return prompt

    def chat(self) -> ChatCompletionRequest:
        """The request in Chat Completions form (translated on first use)."""
        if self._chat is None:
            self._chat, self._dropped["chat"] = self.to_chat()
        return self._chat

    def translated(self, api: Api, dropped: list[str]) -> None:
        """Record what the translation for an upstream speaking ``api`` left out."""
        self._dropped[api] = [*self._dropped.get("chat", []), *dropped]

    def dropped_for(self, api: Api) -> list[str]:
        """What could not reach an upstream speaking ``api`` (nothing, for the client's own)."""
        if api == self.api:
            return []
        return self._dropped.get(api, self._dropped.get("chat", []))

    def texts(self) -> list[str]:
        """The text of each message, to count the prompt's tokens here when its upstream
        reported none; the whole body, for a request only its own API's upstream can read."""
        try:
            return prompt_text(self.chat())
        except APIError:
            return [self.raw.decode("utf-8", "replace")]
