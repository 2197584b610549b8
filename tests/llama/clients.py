"""How the tests of tests/llama talk to llama.cpp and to the gateway in front of it: each
API's path and request, and the usage an answer reports, whole or streamed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tests.conformance.checks import READERS, Outcome, parse_sse
from tests.conftest import API_KEY, Gateway

Headers = Mapping[str, str]
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
HEADERS = {"Authorization": f"Bearer {API_KEY}", "anthropic-version": "2023-06-01"}


def request(api: str, model: str, text: str, stream: bool, max_tokens: int = 4) -> dict[str, Any]:
    """A short request of ``api`` for ``model`` (a Chat Completions stream asks for usage)."""
    if api == "responses":
        return {"model": model, "input": text, "max_output_tokens": max_tokens, "stream": stream}
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    if api == "chat" and stream:
        body["stream_options"] = {"include_usage": True}
    return body


def usage(api: str, stream: bool, raw: bytes) -> dict[str, Any]:
    """The usage of one answer of ``api`` (streams: merged in event order, as a client reads
    it: ``message_start`` and ``message_delta`` each say part of it)."""
    if not stream:
        found: dict[str, Any] = json.loads(raw)["usage"]
        return found
    merged: dict[str, Any] = {}
    for name, event in parse_sse(raw, named=api != "chat"):
        if api == "chat" and event.get("usage"):
            merged.update(event["usage"])
        elif name in ("response.completed", "response.incomplete"):
            merged.update(event["response"]["usage"])
        elif name == "message_start":
            merged.update(event["message"]["usage"])
        elif name == "message_delta":
            merged.update(event["usage"])
    return merged


def read(
    api: str, stream: bool, raw: bytes, *, numbered: bool = True
) -> tuple[Outcome, dict[str, Any]]:
    """What a client of ``api`` sees in the answer ``raw``, and the usage it is told.

    ``numbered=False``: a Responses stream that is llama.cpp's own, passed on as it came,
    whose events carry no ``sequence_number``; they are numbered here before reading.
    """
    outcome = Outcome()
    whole, streamed = READERS[api]
    if not stream:
        decoded = json.loads(raw)
        whole(outcome, decoded)
        return outcome, decoded["usage"]
    events = [data for _, data in parse_sse(raw, named=api != "chat")]
    if not numbered:
        assert all("sequence_number" not in event for event in events)
        events = [{**event, "sequence_number": n} for n, event in enumerate(events)]
    streamed(outcome, events)
    assert not outcome.stream_error, raw[-2000:]
    return outcome, usage(api, True, raw)


async def ask(
    gateway: Gateway, api: str, body: dict[str, Any], *, numbered: bool = True
) -> tuple[Outcome, dict[str, Any]]:
    """Send ``body`` to ``api``; what the client saw and the usage it was told (``read``)."""
    status, raw, _ = await post(gateway, api, body)
    assert status == 200, raw[-2000:]
    return read(api, body["stream"], raw, numbered=numbered)


async def post(gateway: Gateway, api: str, body: dict[str, Any]) -> tuple[int, bytes, Headers]:
    """Send ``body`` to ``api``: the answer's status, bytes and headers."""
    async with gateway.http.post(gateway.url + PATHS[api], json=body, headers=HEADERS) as answer:
        return answer.status, await answer.read(), answer.headers
