"""The clients the conformance suite drives: the official SDKs (sync and async) and raw HTTP.

A request is the same JSON whoever sends it: the SDKs take it as keyword arguments, the raw
client posts it. Sync SDK clients run in a thread, so the fake upstreams and the gateway on
this event loop keep serving them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import openai

from tests.conformance.checks import READERS, Outcome, check_fields, load, parse_sse
from tests.conftest import API_KEY, Gateway

PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
PROMPT = "Say hello"


def request_body(api: str, model: str, scenario: str, stream: bool) -> dict[str, Any]:
    """The request of ``scenario`` in ``api``'s own shape."""
    tools = load("scenarios")[scenario].get("tools", [])
    body: dict[str, Any] = {"model": model, "stream": stream}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": PROMPT}]
        wrapped = [{"type": "function", "function": tool} for tool in tools]
    elif api == "responses":
        body["input"] = PROMPT
        wrapped = [{"type": "function", **tool} for tool in tools]
    else:
        body.update(max_tokens=256, messages=[{"role": "user", "content": PROMPT}])
        wrapped = [
            {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
            for t in tools
        ]
    if wrapped:
        body["tools"] = wrapped
    return body


def _client(gateway: Gateway, api: str, mode: str) -> Any:
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "max_retries": 0,
        "_strict_response_validation": True,
    }
    if api == "messages":
        factory: Callable[..., Any] = (
            anthropic.Anthropic if mode == "sync" else anthropic.AsyncAnthropic
        )
        return factory(base_url=gateway.url, **options)
    factory = openai.OpenAI if mode == "sync" else openai.AsyncOpenAI
    return factory(base_url=f"{gateway.url}/v1", **options)


async def _call(mode: str, method: Callable[..., Any], **kwargs: Any) -> Any:
    if mode == "async":
        return await method(**kwargs)
    return await asyncio.to_thread(lambda: method(**kwargs))


async def _items(stream: Any) -> AsyncIterator[Any]:
    if hasattr(stream, "__aiter__"):
        async for item in stream:
            yield item
        return
    iterator, done = iter(stream), object()
    while (item := await asyncio.to_thread(next, iterator, done)) is not done:
        yield item


async def run_sdk(gateway: Gateway, api: str, mode: str, body: dict[str, Any]) -> Outcome:
    """Send ``body`` with the official SDK of ``api``; report what it returned or raised."""
    client = _client(gateway, api, mode)
    method = {
        "chat": lambda: client.chat.completions.create,
        "responses": lambda: client.responses.create,
        "messages": lambda: client.messages.create,
    }[api]()
    read_body, read_stream = READERS[api]
    outcome = Outcome()
    try:
        result = await _call(mode, method, **body)
        if not body["stream"]:
            read_body(outcome, result.to_dict())
            return outcome
        events = []
        try:
            async for event in _items(result):
                events.append(event.to_dict())
        except (openai.APIError, anthropic.APIError):
            outcome.stream_error = True  # how these SDKs report an error event mid-stream
        read_stream(outcome, events)
    except (openai.APIStatusError, anthropic.APIStatusError) as err:
        outcome.status = err.status_code
    finally:
        closed = client.close()
        if asyncio.iscoroutine(closed):
            await closed
    return outcome


async def run_raw(gateway: Gateway, api: str, body: dict[str, Any]) -> Outcome:
    """POST ``body`` over plain HTTP and check every byte of the answer against the schemas."""
    headers = (
        {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
        if api == "messages"
        else {"Authorization": f"Bearer {API_KEY}"}
    )
    read_body, read_stream = READERS[api]
    async with gateway.http.post(gateway.url + PATHS[api], json=body, headers=headers) as resp:
        outcome = Outcome(status=resp.status)
        assert resp.headers["Server-Timing"].startswith(("gw;", "gw-pre;"))
        if resp.status != 200:
            check_fields(api, "error_body", await resp.json())
            return outcome
        if not body["stream"]:
            data = await resp.json()
            check_fields(api, "body", data)
            read_body(outcome, data)
            return outcome
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = parse_sse(await resp.read(), named=api != "chat")
    for name, data in events:
        check_fields(api, name, data, table="events")
    outcome.events = [name for name, _ in events]
    read_stream(outcome, [data for name, data in events if name != "[DONE]"])
    return outcome
