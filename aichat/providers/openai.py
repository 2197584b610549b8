"""Any OpenAI-compatible upstream: OpenAI itself, vLLM, llama.cpp, Ollama, another gateway.

The client's request goes upstream as it was sent — every standard parameter and unknown
field — with only ``model`` rewritten. The answer comes back as upstream chunks, forwarded
with only the model name changed, so tool-call deltas and everything else arrive exactly as
the upstream streamed them. Upstream errors keep their status and message, except that an
upstream refusing the gateway's own credentials is a 502: the client's key was fine.

Streams always ask the upstream for usage (``stream_options.include_usage``), which token
accounting needs; a client that did not ask does not get the usage chunk.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, suppress
from typing import Any

import aiohttp
import orjson

from aichat.core.errors import UpstreamError
from aichat.core.prompt import Api, Prompt
from aichat.providers.base import Event, Finish, RawChunks, RawCompletion, Usage
from aichat.providers.errors import error_object, event_error, upstream_error
from aichat.providers.http import UpstreamBounds, request_headers, upstream_body
from aichat.providers.reported import openai_usage
from aichat.providers.streaming import iter_line_batches

# Quotes inside JSON strings are escaped: these cannot match answer text.
_USAGE_OBJECT = re.compile(r'"usage"\s*:\s*\{')
_NO_CHOICES = re.compile(r'"choices"\s*:\s*\[\s*\]')


def reported_usage(json_text: str) -> Usage | None:
    """The usage an OpenAI chunk or completion reports; parsed only when it may hold one.

    A key spelled with a JSON escape (``"\\u0075sage"``) is still a usage key: texts with an
    escape are parsed too (rare, as upstreams write keys plainly).
    """
    if "\\u" not in json_text and _USAGE_OBJECT.search(json_text) is None:
        return None
    try:
        data = orjson.loads(json_text)
    except orjson.JSONDecodeError:
        return None
    return openai_usage(data) if isinstance(data, dict) else None


def read_payloads(lines: list[str]) -> tuple[list[str], bool, int | None]:
    """One read's chunks: its non-empty ``data:`` payloads up to ``[DONE]``, whether
    ``[DONE]`` came (nothing after it counts), and where the first ``{"error"`` payload is.

    One pass over the lines, as this runs for every read of every stream.
    """
    payloads: list[str] = []
    failed = None
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[6:] if line.startswith("data: ") else line[5:]  # see sse_payloads
        if not payload:
            continue
        if payload == "[DONE]":
            return payloads, True, failed
        if failed is None and payload.startswith('{"error"'):
            failed = len(payloads)
        payloads.append(payload)
    return payloads, False, failed


def usage_only(json_text: str) -> bool:
    """Whether a chunk is the usage chunk ``include_usage`` adds (no choices)."""
    return _NO_CHOICES.search(json_text) is not None


END_GRACE = 1.0  # seconds an upstream has to end its body after ``[DONE]``


def _stream_error(payload: str, name: str) -> UpstreamError:
    """The error an upstream reported inside its stream (a ``{"error": ...}`` event)."""
    return event_error(error_object(payload), name, retryable=True)


def _request_json(body: dict[str, Any]) -> bytes:
    """The request for the upstream, every value as the client sent it."""
    try:
        return orjson.dumps(body)
    except TypeError:  # an integer past 64 bits, which orjson refuses and json writes exactly
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _with_usage(options: Any) -> dict[str, Any]:
    """The client's ``stream_options`` (if an object) asking for the usage chunk."""
    return {**(options if isinstance(options, dict) else {}), "include_usage": True}


async def _read_end(body: AsyncGenerator[bytes, float | None]) -> None:
    """Read what follows ``[DONE]``: the end of the body, so the connection can be reused.

    aiohttp closes a connection released with its body unread, and an upstream may send the
    end of its body apart from ``[DONE]``: without this read, every such stream would cost a
    new connection (a TLS handshake, for most upstreams). The answer is complete already,
    so an upstream that does not end its body within ``END_GRACE`` seconds, or breaks, only
    loses its connection; until then the request's handler, and with it the client's
    connection for its next request, waits. The bytes are read past the line splitter,
    which has nothing more to give.
    """
    with suppress(UpstreamError, StopAsyncIteration):
        while True:
            await body.asend(END_GRACE)


class OpenAIProvider:
    """Forwards chat completions to an OpenAI-compatible ``base_url``."""

    name = "openai"
    api: Api = "chat"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | None,
        bounds: UpstreamBounds,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._session = session
        self._url = f"{base_url}/chat/completions"
        self._bounds = bounds
        auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._headers = request_headers(auth, headers)

    async def stream(self, prompt: Prompt, upstream_model: str) -> AsyncGenerator[Event, None]:
        """Yield the upstream's chunks (or its whole completion), then ``Finish``."""
        request = prompt.chat()
        sent = {**request.body, "model": upstream_model}
        if request.stream:
            sent["stream_options"] = _with_usage(request.body.get("stream_options"))
        body = upstream_body(
            self._session,
            self._url,
            body=_request_json(sent),
            headers=self._headers[request.stream],
            bounds=self._bounds,
            name=self.name,
            whole=not request.stream,
        )
        try:
            async with aclosing(body):
                if not request.stream:
                    completion = await self._read_all(body)
                    yield RawCompletion(completion, reported_usage(completion))
                    yield Finish()
                    return
                hide_usage = not request.include_usage
                line_batches = iter_line_batches(body, self._bounds.max_line)
                async with aclosing(line_batches) as batches:
                    async for lines in batches:
                        payloads, done, failed = read_payloads(lines)
                        if failed is not None:
                            if failed:  # what came before the error still reaches the client
                                yield RawChunks(tuple(payloads[:failed]))
                            raise _stream_error(payloads[failed], self.name)
                        # Only a read's last chunk can be the usage chunk: [DONE] follows it.
                        usage = reported_usage(payloads[-1]) if payloads else None
                        if usage is not None and hide_usage and usage_only(payloads[-1]):
                            payloads.pop()
                        if not done:
                            if payloads or usage:
                                yield RawChunks(tuple(payloads), usage=usage)
                            continue
                        try:
                            if payloads or usage:
                                yield RawChunks(tuple(payloads), last=True, usage=usage)
                            yield Finish()
                        finally:  # also when the consumer stops here, as most do
                            await _read_end(body)
                        return
        except UpstreamError as err:
            raise upstream_error(err, self.name) from None

    async def _read_all(self, body: AsyncIterator[bytes]) -> str:
        text = b"".join([chunk async for chunk in body]).decode("utf-8", "replace")
        if not text.lstrip().startswith("{"):
            raise UpstreamError(f"{self.name} upstream answered with something other than JSON.")
        return text
