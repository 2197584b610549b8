"""An OpenAI-compatible upstream spoken to with the Responses API (``api = "responses"``):
OpenAI's Responses-only models, llama.cpp's or vLLM's ``/v1/responses``.

Requests go to ``{base_url}/responses`` with the key as a bearer token. A Responses request
goes as the client sent it (only the model rewritten): ``previous_response_id``, ``store``,
encrypted reasoning, ``prompt_cache_key`` and hosted tools reach the upstream, which keeps
the state and runs the tools, and its events come back as it sent them. A request in another
API is translated (``responses_request``), stateless (``store: false``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import orjson

from aichat.core.prompt import Api, Prompt
from aichat.providers.base import Event, Usage
from aichat.providers.errors import upstream_error
from aichat.providers.http import JSON_HEADERS, UpstreamBounds
from aichat.providers.native import Dialect, native_answer, prompt_body
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


class ResponsesProvider:
    """Speaks the Responses API to an OpenAI-compatible ``base_url``."""

    name = "openai"
    api: Api = "responses"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | None,
        bounds: UpstreamBounds,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._session = session
        self._url = f"{base_url}/responses"
        self._bounds = bounds
        auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._headers = {
            stream: {**auth, **JSON_HEADERS, "Accept": accept, **(headers or {})}
            for stream, accept in ((True, "text/event-stream"), (False, "application/json"))
        }

    def stream(self, prompt: Prompt, upstream_model: str) -> AsyncGenerator[Event, None]:
        """The upstream's answer: ``RawEvents`` (or a ``RawBody``), then ``Finish``."""

        def translated() -> bytes:
            body, dropped = responses_request(prompt.chat(), upstream_model)
            prompt.translated("responses", dropped)
            return orjson.dumps(body)

        return native_answer(
            RESPONSES,
            self._session,
            self._url,
            body=prompt_body(prompt, "responses", upstream_model, translated),
            headers=self._headers[prompt.stream],
            bounds=self._bounds,
            name=self.name,
            stream=prompt.stream,
            shaped=lambda err: upstream_error(err, self.name),
        )
