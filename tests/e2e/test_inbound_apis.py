"""The Responses and Anthropic Messages endpoints: auth, error shapes, emulated tools, headers."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import pytest

import aichat
from aichat.core.config import ModelConfig
from tests.conformance.checks import parse_sse
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.fakes import FakeAichats, FakeOpenAI

TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}
HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
async def gw(make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]) -> Gateway:
    routes = (
        ModelConfig(name="gpt-4o", provider="aichats"),
        ModelConfig(name="tools", provider="aichats", emulate_tools=True),
        ModelConfig(name="up", provider="openai", base_url=openai_upstream[1]),
    )
    return await make_gateway(routes=routes, retries=0)


def _claude(gateway: Gateway, key: str = API_KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=key, max_retries=0, _strict_response_validation=True
    )


async def _post(gateway: Gateway, path: str, body: Any, **headers: str) -> Any:
    return await gateway.http.post(f"{gateway.url}{path}", json=body, headers=headers)


async def test_messages_auth_and_errors_are_anthropic_shaped(gw: Gateway) -> None:
    async with _claude(gw, "wrong") as client:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await client.messages.create(model="gpt-4o", max_tokens=9, messages=HELLO)
    assert info.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": info.value.body["error"]["message"]},
    }
    resp = await gw.http.get(f"{gw.url}/v1/messages", headers={"x-api-key": API_KEY})
    assert resp.status == 405
    assert (await resp.json())["error"]["type"] == "invalid_request_error"
    resp = await _post(
        gw,
        "/v1/messages",
        {"model": "nope", "max_tokens": 5, "messages": HELLO},
        **{"x-api-key": API_KEY},
    )
    assert resp.status == 404
    assert (await resp.json())["error"]["type"] == "not_found_error"
    # The other APIs keep OpenAI's shape, and x-api-key works there too.
    resp = await _post(
        gw, "/v1/responses", {"model": "nope", "input": "x"}, **{"x-api-key": API_KEY}
    )
    assert set((await resp.json())["error"]) == {"message", "type", "param", "code"}


async def test_count_tokens_is_answered_locally(gw: Gateway, fake: FakeAichats) -> None:
    async with _claude(gw) as client:
        counted = await client.messages.count_tokens(model="gpt-4o", messages=HELLO)
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.count_tokens(model="nope", messages=HELLO)
    assert counted.input_tokens > 0
    assert fake.requests == []


async def test_stateless_responses_refuse_previous_response_id(gw: Gateway) -> None:
    body = {"model": "gpt-4o", "input": "x", "previous_response_id": "resp_1"}
    resp = await _post(gw, "/v1/responses", body, Authorization=f"Bearer {API_KEY}")
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["param"], error["code"]) == ("previous_response_id", "unsupported_parameter")


async def test_tools_without_emulation_are_still_refused(gw: Gateway, fake: FakeAichats) -> None:
    body = {"model": "gpt-4o", "max_tokens": 9, "messages": HELLO, "tools": [TOOL]}
    resp = await _post(gw, "/v1/messages", body, **{"x-api-key": API_KEY})
    assert resp.status == 400
    assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert fake.requests == []


async def test_emulated_tool_round_trip_with_the_stream_helper(
    gw: Gateway, fake: FakeAichats
) -> None:
    fake.pieces = [
        '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Oslo"}}]</tool_calls>'
    ]
    async with _claude(gw) as client:
        async with client.messages.stream(
            model="tools",
            max_tokens=99,
            messages=HELLO,
            tools=[TOOL],  # type: ignore[list-item]
        ) as stream:
            first = await stream.get_final_message()
        (call,) = first.content
        assert call.type == "tool_use"
        assert (call.name, call.input, first.stop_reason) == (
            "get_weather",
            {"city": "Oslo"},
            "tool_use",
        )
        fake.pieces = ["It is ", "cold."]
        history: list[Any] = [
            *HELLO,
            {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "-3 C"}],
            },
        ]
        async with client.messages.stream(
            model="tools",
            max_tokens=99,
            messages=history,
            tools=[TOOL],  # type: ignore[list-item]
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
    assert text == "It is cold."
    transcript = fake.requests[1]["messagesHistory"][0]["content"]
    assert "get_weather" in transcript and "Tool result (get_weather" in transcript
    assert "-3 C" in transcript


async def test_unparseable_emulated_call_is_plain_text(gw: Gateway, fake: FakeAichats) -> None:
    fake.pieces = ["<tool_calls>not json</tool_calls>"]
    async with gw.sdk() as client:
        answer = await client.chat.completions.create(
            model="tools",
            messages=HELLO,
            tools=[{"type": "function", "function": {"name": "get_weather"}}],
        )
    choice = answer.choices[0]
    assert (choice.message.content, choice.message.tool_calls, choice.finish_reason) == (
        "<tool_calls>not json</tool_calls>",
        None,
        "stop",
    )


async def test_dropped_params_are_reported(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    body = {"model": "gpt-4o", "messages": HELLO, "seed": 7, "temperature": 0.1}
    resp = await _post(gw, "/v1/chat/completions", body, Authorization=f"Bearer {API_KEY}")
    assert resp.headers["x-aichat-dropped-params"] == "seed,temperature"
    assert any(
        getattr(r, "fields", {}).get("dropped") == "seed,temperature" for r in caplog.records
    )
    body["model"] = "up"  # the OpenAI-compatible upstream takes everything
    resp = await _post(gw, "/v1/chat/completions", body, Authorization=f"Bearer {API_KEY}")
    assert "x-aichat-dropped-params" not in resp.headers


async def test_server_timing_everywhere(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    health = await gw.http.get(f"{gw.url}/health")
    assert health.headers["Server-Timing"].startswith("gw;dur=")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    whole = await _post(gw, "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO}, **auth)
    names = [part.split(";")[0] for part in whole.headers["Server-Timing"].split(", ")]
    assert names == ["gw-pre", "upstream", "gw-post"]
    stream = await _post(
        gw, "/v1/responses", {"model": "gpt-4o", "input": "x", "stream": True}, **auth
    )
    assert stream.headers["Server-Timing"].startswith("gw-pre;dur=")
    await stream.read()
    line = [r for r in caplog.records if r.name == "aichat.access"][-1]
    assert {"gw_pre_ms", "gw_post_ms"} <= set(line.fields)  # type: ignore[attr-defined]


async def test_finish_without_done_is_not_a_success(
    gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up = openai_upstream[0]
    up.drop_after = 6  # role, four pieces and finish_reason "stop" arrive; [DONE] never does
    up.text_pieces = ["a", "b", "c", "d"]
    auth = {"Authorization": f"Bearer {API_KEY}"}
    resp = await _post(gw, "/v1/responses", {"model": "up", "input": "x", "stream": True}, **auth)
    names = [name for name, _ in parse_sse(await resp.read(), named=True)]
    assert names[-2:] == ["error", "response.failed"]
    assert "response.completed" not in names
    body = {"model": "up", "max_tokens": 9, "messages": HELLO, "stream": True}
    resp = await _post(gw, "/v1/messages", body, **{"x-api-key": API_KEY})
    events = parse_sse(await resp.read(), named=True)
    assert events[-1][0] == "error"
    assert "message_stop" not in [name for name, _ in events]
    assert json.dumps(events[-1][1]).startswith('{"type": "error"')


@contextmanager
def generators_left_to_gc() -> Iterator[list[str]]:
    """Names of aichat's async generators that the garbage collector had to close.

    Entered inside a test: the running loop installs its own hooks when it starts.
    """
    package = str(Path(aichat.__file__).parent)
    hooks = sys.get_asyncgen_hooks()
    names: list[str] = []

    def finalizer(agen: Any) -> None:
        if agen.ag_code.co_filename.startswith(package):
            names.append(agen.ag_code.co_qualname)
        if hooks.finalizer is not None:
            hooks.finalizer(agen)

    sys.set_asyncgen_hooks(hooks.firstiter, finalizer)
    try:
        yield names
    finally:
        sys.set_asyncgen_hooks(*hooks)


OPENAI_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "parameters": {}}


@pytest.mark.parametrize("tool_call", [False, True])
async def test_complete_answers_close_their_generators_in_the_request(
    gw: Gateway, fake: FakeAichats, tool_call: bool
) -> None:
    # A generator left suspended is closed by the loop in a task of its own, woken through
    # a thread-safe call: work per request that belongs in the request.
    auth = {"Authorization": f"Bearer {API_KEY}"}
    models = ("gpt-4o", "up")
    tools: dict[str, dict[str, Any]] = {"chat": {}, "responses": {}, "messages": {}}
    if tool_call:  # the emulated tool calls of the aichats provider
        fake.pieces = ['<tool_calls>[{"name": "get_weather", "arguments": {}}]</tool_calls>']
        models = ("tools",)
        tools = {
            "chat": {"tools": [OPENAI_TOOL]},
            "responses": {"tools": [RESPONSES_TOOL]},
            "messages": {"tools": [TOOL]},
        }
    with generators_left_to_gc() as left:
        for model in models:
            for stream in (True, False):
                chat = {"model": model, "messages": HELLO, "stream": stream, **tools["chat"]}
                responses = {"model": model, "input": "x", "stream": stream, **tools["responses"]}
                messages = {
                    "model": model,
                    "messages": HELLO,
                    "stream": stream,
                    "max_tokens": 9,
                    **tools["messages"],
                }
                for path, body, headers in (
                    ("/v1/chat/completions", chat, auth),
                    ("/v1/responses", responses, auth),
                    ("/v1/messages", messages, {"x-api-key": API_KEY}),
                ):
                    resp = await _post(gw, path, body, **headers)
                    assert resp.status == 200, await resp.text()
                    answer = await resp.read()
                    assert (b"get_weather" in answer) is tool_call
        await asyncio.sleep(0.05)
        gc.collect()
    assert left == []
