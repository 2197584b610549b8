"""An OpenAI-compatible upstream spoken to with the Responses API (``api = "responses"``):
OpenAI's Responses-only models, llama.cpp's or vLLM's ``/v1/responses``.

Requests go to ``{base_url}/responses`` with the key as a bearer token. A Responses request
goes as the client sent it (only the model rewritten): ``previous_response_id``, ``store``,
encrypted reasoning, ``prompt_cache_key`` and hosted tools reach the upstream, which keeps
the state and runs the tools, and its events come back as it sent them. A request in another
API is translated (``responses_request``), stateless (``store: false``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from aichat.core.prompt import Api
from aichat.core.schemas import ChatCompletionRequest
from aichat.providers.base import Usage
from aichat.providers.http import UpstreamBounds, request_headers
from aichat.providers.native import Dialect, NativeProvider
from aichat.providers.reported import responses_usage
from aichat.providers.responses_events import failure
from aichat.providers.responses_request import responses_request


def _final(event: dict[str, Any], before: Usage | None) -> Usage | None:
    response = event.get("response")
    usage = responses_usage(response.get("usage")) if isinstance(response, dict) else None
    return usage or before


RESPONSES = Dialect(
    api="responses",
    usage={b"response.completed": _final, b"response.incomplete": _final},
    ends=frozenset({b"response.completed", b"response.incomplete"}),
    fails=frozenset({b"response.failed", b"error"}),
    failure=failure,
    whole_usage=lambda response: responses_usage(response.get("usage")),
)


class ResponsesProvider(NativeProvider):
    """Speaks the Responses API to an OpenAI-compatible ``base_url``."""

    name = "openai"
    api: Api = "responses"
    dialect = RESPONSES

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | None,
        bounds: UpstreamBounds,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(session, f"{base_url}/responses", bounds, request_headers(auth, headers))

    def translate(
        self, chat: ChatCompletionRequest, model: str
    ) -> tuple[dict[str, Any], list[str]]:
        """The Responses request for ``chat``."""
        return responses_request(chat, model)
