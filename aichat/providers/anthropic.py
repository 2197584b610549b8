"""An upstream that speaks Anthropic Messages: Anthropic itself, or the Messages endpoint
of llama.cpp, vLLM, DeepSeek or Kimi.

Requests go to ``{base_url}/v1/messages`` with the key as ``x-api-key`` and the route's
``anthropic-version``. A Messages request goes as the client sent it (only the model
rewritten), with the client's ``anthropic-beta`` and ``anthropic-version`` headers: thinking
signatures, ``cache_control`` breakpoints, documents, citations, server tools and beta
features all reach Anthropic, and its answer comes back as it sent it. A request in another
API is translated (``anthropic_request``). Errors keep Anthropic's status, type and message;
``overloaded_error`` (529) and ``rate_limit_error`` (429) are retried and failed over like
any 5xx or 429. A route with ``prompt_caching = "auto"`` marks the translated requests'
tools, system prompt and last turns for Anthropic's prompt cache (``cache_breakpoints``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from aichat.core.prompt import Api, Prompt
from aichat.core.schemas import ChatCompletionRequest
from aichat.providers.anthropic_events import failure, merged_usage
from aichat.providers.anthropic_request import cache_breakpoints, messages_request
from aichat.providers.base import Usage
from aichat.providers.http import UpstreamBounds, request_headers
from aichat.providers.native import Dialect, NativeProvider
from aichat.providers.reported import anthropic_usage

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
# The client's headers that a Messages upstream is given with the client's own request.
FORWARDED_HEADERS = ("anthropic-beta", "anthropic-version")


def _message_start(event: dict[str, Any], before: Usage | None) -> Usage | None:
    message = event.get("message")
    return merged_usage(message.get("usage") if isinstance(message, dict) else None, before)


def _message_delta(event: dict[str, Any], before: Usage | None) -> Usage | None:
    return merged_usage(event.get("usage"), before)


MESSAGES = Dialect(
    api="messages",
    usage={b"message_start": _message_start, b"message_delta": _message_delta},
    ends=frozenset({b"message_stop"}),
    fails=frozenset({b"error"}),
    failure=failure,
    whole_usage=lambda message: anthropic_usage(message.get("usage")),
)


class AnthropicProvider(NativeProvider):
    """Speaks Anthropic Messages to ``base_url``."""

    name = "anthropic"
    api: Api = "messages"
    dialect = MESSAGES

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | None,
        bounds: UpstreamBounds,
        *,
        version: str = DEFAULT_VERSION,
        headers: Mapping[str, str] | None = None,
        max_tokens: int = 4096,
        prompt_caching: bool = False,
    ) -> None:
        auth = {"anthropic-version": version, **({"x-api-key": api_key} if api_key else {})}
        super().__init__(session, f"{base_url}/v1/messages", bounds, request_headers(auth, headers))
        self._max_tokens = max_tokens
        self._caching = prompt_caching

    def translate(
        self, chat: ChatCompletionRequest, model: str
    ) -> tuple[dict[str, Any], list[str]]:
        """The Messages request for ``chat`` (the route's ``max_tokens`` when it sets none),
        marked for the prompt cache when the route asks."""
        request, dropped = messages_request(chat, model, self._max_tokens)
        if self._caching:
            cache_breakpoints(request)
        return request, dropped

    def headers(self, prompt: Prompt) -> dict[str, str]:
        """The route's headers, and a Messages client's own ``anthropic-*`` ones."""
        headers = self._headers[prompt.stream]
        if prompt.api != "messages":
            return headers
        given = {k: prompt.headers[k] for k in FORWARDED_HEADERS if k in prompt.headers}
        return {**headers, **given} if given else headers
