"""Prompt caching across APIs: ``prompt_cache_key`` reaches the upstreams that take it and is
named as dropped where it cannot go, and so are a Messages client's ``cache_control``
breakpoints; an ``anthropic`` route with ``prompt_caching = "auto"`` marks translated
requests for Anthropic's cache. Driven by the official openai SDK."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from aichat.core.config import ModelConfig
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.fakes import FakeOpenAI
from tests.fakes_native import FakeAnthropic, FakeResponses

EPHEMERAL = {"type": "ephemeral"}
TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
CONVERSATION: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "Sunny."},
    {"role": "user", "content": "And in Rome?"},
]


@pytest.fixture
async def gw(
    make_gateway: GatewayFactory,
    claude_up: tuple[FakeAnthropic, str],
    responses_up: tuple[FakeResponses, str],
    openai_upstream: tuple[FakeOpenAI, str],
) -> Gateway:
    routes = (
        ModelConfig(
            name="cached", provider="anthropic", base_url=claude_up[1], prompt_caching="auto"
        ),
        ModelConfig(name="plain", provider="anthropic", base_url=claude_up[1]),
        ModelConfig(name="resp", provider="openai", base_url=responses_up[1], api="responses"),
        ModelConfig(name="chat", provider="openai", base_url=openai_upstream[1]),
    )
    return await make_gateway(routes=routes)


def marks(request: dict[str, Any]) -> list[str]:
    """Where a Messages request carries ``cache_control``, in the order Anthropic reads it."""
    found = [
        f"tools[{i}]" for i, tool in enumerate(request.get("tools", [])) if "cache_control" in tool
    ]
    system = request.get("system")
    if isinstance(system, list):
        found += [f"system[{i}]" for i, block in enumerate(system) if "cache_control" in block]
    for i, turn in enumerate(request["messages"]):
        content = turn["content"] if isinstance(turn["content"], list) else []
        found += [
            f"messages[{i}][{j}]" for j, block in enumerate(content) if "cache_control" in block
        ]
    return found


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_chat_client_on_an_auto_caching_route_marks_tools_system_and_last_turns(
    gw: Gateway, claude_up: tuple[FakeAnthropic, str], stream: bool
) -> None:
    fake = claude_up[0]
    async with gw.sdk() as client:
        answer = await client.chat.completions.with_raw_response.create(
            model="cached",
            messages=CONVERSATION,
            tools=[TOOL],
            prompt_cache_key="session-1",
            stream=stream,
        )
        parsed = answer.parse()
        if stream:
            [chunk async for chunk in parsed]  # type: ignore[union-attr]
    (sent,) = fake.requests
    assert marks(sent) == ["tools[0]", "system[0]", "messages[0][0]", "messages[2][0]"]
    assert sent["system"] == [
        {"type": "text", "text": "You are terse.", "cache_control": EPHEMERAL}
    ]
    assert sent["messages"][2]["content"] == [
        {"type": "text", "text": "And in Rome?", "cache_control": EPHEMERAL}
    ]
    # Anthropic has no place for the key: said, as any parameter that cannot go.
    assert "prompt_cache_key" not in sent
    assert "prompt_cache_key" in answer.headers["x-aichat-dropped-params"].split(",")


async def test_a_responses_client_s_long_conversation_gets_four_marks_at_most(
    gw: Gateway, claude_up: tuple[FakeAnthropic, str]
) -> None:
    turns: list[Any] = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"Turn {n}."} for n in range(7)
    ]
    async with gw.sdk() as client:
        await client.responses.create(
            model="cached",
            instructions="You are terse.",
            input=turns,
            tools=[{"type": "function", "name": "get_weather", "parameters": {}, "strict": False}],
        )
    (sent,) = claude_up[0].requests
    # The last turn and the user turn before it: the cache this request writes, and the one
    # the request before it wrote.
    assert marks(sent) == ["tools[0]", "system[0]", "messages[4][0]", "messages[6][0]"]


async def test_without_prompt_caching_or_from_a_messages_client_nothing_is_added(
    gw: Gateway, claude_up: tuple[FakeAnthropic, str]
) -> None:
    fake = claude_up[0]
    async with gw.sdk() as client:
        await client.chat.completions.create(model="plain", messages=CONVERSATION, tools=[TOOL])
    headers = {"Authorization": f"Bearer {API_KEY}", "anthropic-version": "2023-06-01"}
    body = {"model": "cached", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
    async with gw.http.post(f"{gw.url}/v1/messages", json=body, headers=headers) as answer:
        assert answer.status == 200
    assert [marks(sent) for sent in fake.requests] == [[], []]
    assert fake.requests[1]["messages"] == body["messages"]  # a Messages client's, as sent


@pytest.mark.parametrize("client_api", ["chat", "responses"])
@pytest.mark.parametrize("route", ["chat", "resp"])
async def test_prompt_cache_key_reaches_openai_upstreams_from_either_openai_api(
    gw: Gateway,
    openai_upstream: tuple[FakeOpenAI, str],
    responses_up: tuple[FakeResponses, str],
    client_api: str,
    route: str,
) -> None:
    async with gw.sdk() as client:
        if client_api == "chat":
            answer = await client.chat.completions.with_raw_response.create(
                model=route, messages=CONVERSATION, prompt_cache_key="session-1"
            )
        else:
            answer = await client.responses.with_raw_response.create(
                model=route, input="Hi", prompt_cache_key="session-1", store=False
            )
    received = openai_upstream[0].requests if route == "chat" else responses_up[0].requests
    assert [sent["prompt_cache_key"] for sent in received] == ["session-1"]
    assert "prompt_cache_key" not in answer.headers.get("x-aichat-dropped-params", "")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("route", "label"), [("chat", "chat (openai)"), ("resp", "resp (openai)")])
async def test_a_messages_client_s_cache_breakpoints_are_named_as_dropped_for_another_api(
    gw: Gateway, caplog: pytest.LogCaptureFixture, route: str, label: str, stream: bool
) -> None:
    caplog.set_level(logging.WARNING, "aichat.answering")
    marked = {"type": "text", "text": "Weather in Paris?", "cache_control": EPHEMERAL}
    body = {
        "model": route,
        "max_tokens": 16,
        "stream": stream,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": EPHEMERAL}],
        "messages": [{"role": "user", "content": [marked]}],
    }
    headers = {"Authorization": f"Bearer {API_KEY}", "anthropic-version": "2023-06-01"}
    async with gw.http.post(f"{gw.url}/v1/messages", json=body, headers=headers) as answer:
        assert answer.status == 200, await answer.text()
        await answer.read()
    assert answer.headers["x-aichat-dropped-params"] == "cache_control"
    warnings = [
        getattr(r, "fields", {})
        for r in caplog.records
        if r.message == "request parameters dropped"
    ]
    assert warnings == [{"upstream": label, "dropped": "cache_control"}]
    # An anthropic route keeps them: nothing to name.
    async with gw.http.post(
        f"{gw.url}/v1/messages", json={**body, "model": "plain"}, headers=headers
    ) as answer:
        assert answer.status == 200 and "x-aichat-dropped-params" not in answer.headers


async def test_cached_tokens_of_an_auto_caching_route_reach_the_chat_client(gw: Gateway) -> None:
    async with gw.sdk() as client:
        completion = await client.chat.completions.create(model="cached", messages=CONVERSATION)
    # The fake reports 3 uncached, 10 written and 255 read input tokens.
    assert completion.usage is not None and completion.usage.prompt_tokens == 268
    details = completion.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == 255
