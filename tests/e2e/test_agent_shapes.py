"""What coding agents send and expect, through a real gateway and the official SDKs.

Reasoning from an OpenAI-compatible upstream reaches Responses as reasoning items and
Anthropic as thinking blocks (streamed and whole), Chat Completions as the upstream sent it;
``reasoning = "strip"`` hides it everywhere. Namespace tools round-trip with their names,
system turns mid-conversation reach the upstream at their place.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from aichat.core.config import ModelConfig
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.fakes import FakeOpenAI

THOUGHT = ["Let me ", "think."]
HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
async def gw(make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]) -> Gateway:
    openai_upstream[0].reasoning_pieces = THOUGHT
    url = openai_upstream[1]
    routes = (
        ModelConfig(name="up", provider="openai", base_url=url),
        ModelConfig(name="hidden", provider="openai", base_url=url, reasoning="strip"),
        ModelConfig(name="thinker", provider="mock", text="<think>plan</think>\n\nDone."),
    )
    return await make_gateway(routes=routes, retries=0)


def _claude(gateway: Gateway) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=API_KEY, max_retries=0, _strict_response_validation=True
    )


@pytest.mark.parametrize("stream", [True, False])
async def test_upstream_reasoning_is_a_reasoning_item_in_responses(
    gw: Gateway, stream: bool
) -> None:
    async with gw.sdk() as client:
        if stream:
            async with client.responses.stream(model="up", input="hi") as events:
                kinds = [event.type async for event in events]
                response = await events.get_final_response()
            assert kinds.index("response.reasoning_summary_text.delta") < kinds.index(
                "response.output_text.delta"
            )
        else:
            response = await client.responses.create(model="up", input="hi")
    reasoning, message = response.output
    assert (reasoning.type, message.type) == ("reasoning", "message")
    assert [part.text for part in reasoning.summary] == ["Let me think."]
    assert response.output_text == "Hi from upstream"


@pytest.mark.parametrize("stream", [True, False])
async def test_upstream_reasoning_is_a_thinking_block_in_messages(
    gw: Gateway, stream: bool
) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    async with _claude(gw) as client:
        if stream:
            async with client.messages.stream(
                model="up",
                max_tokens=99,
                messages=HELLO,
                thinking=thinking,  # type: ignore[arg-type]
            ) as events:
                kinds = [event.type async for event in events]
                message = await events.get_final_message()
            assert "thinking" in kinds and "signature" in kinds
        else:
            message = await client.messages.create(
                model="up",
                max_tokens=99,
                messages=HELLO,
                thinking=thinking,  # type: ignore[arg-type]
            )
        block, text = message.content
        assert block.type == "thinking"
        assert block.thinking == "Let me think."
        assert text.type == "text"
        assert text.text == "Hi from upstream"
        # Without thinking asked for, the answer is text alone, as Anthropic answers.
        plain = await client.messages.create(model="up", max_tokens=99, messages=HELLO)  # type: ignore[arg-type]
    assert [block.type for block in plain.content] == ["text"]
    assert plain.content[0].text == "Hi from upstream"  # type: ignore[union-attr]


async def test_think_tags_in_the_text_become_reasoning(gw: Gateway) -> None:
    async with gw.sdk() as client:
        response = await client.responses.create(model="thinker", input="hi")
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output_text == "Done."


async def test_chat_completions_passes_reasoning_through_unless_stripped(gw: Gateway) -> None:
    async with gw.sdk() as client:
        for model, expected in (("up", "Let me think."), ("hidden", "")):
            stream = await client.chat.completions.create(
                model=model,
                messages=HELLO,
                stream=True,  # type: ignore[arg-type]
            )
            reasoning, text = "", ""
            async for chunk in stream:
                for choice in chunk.choices:
                    reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
                    text += choice.delta.content or ""
            assert (reasoning, text) == (expected, "Hi from upstream")
        whole = await client.chat.completions.create(model="hidden", messages=HELLO)  # type: ignore[arg-type]
        assert "reasoning_content" not in (whole.choices[0].message.model_extra or {})
        response = await client.responses.create(model="hidden", input="hi")
    assert [item.type for item in response.output] == ["message"]


async def test_an_answer_opening_with_a_think_that_never_closes_reaches_the_client(
    gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    # A model writing about the tag: the answer was all reasoning (and nothing at all with
    # reasoning = "strip").
    fake = openai_upstream[0]
    fake.reasoning_pieces = []
    fake.text_pieces = ["<think>", " is the tag some models open their reasoning with."]
    text = "".join(fake.text_pieces)
    async with gw.sdk() as client:
        for model in ("up", "hidden"):
            response = await client.responses.create(model=model, input="hi")
            assert response.output_text == text
            async with client.responses.stream(model=model, input="hi") as events:
                async for _ in events:
                    pass
                assert (await events.get_final_response()).output_text == text
        stripped = await client.chat.completions.create(model="hidden", messages=HELLO)  # type: ignore[arg-type]
    assert stripped.choices[0].message.content == text
    async with _claude(gw) as claude:
        message = await claude.messages.create(model="up", max_tokens=50, messages=HELLO)  # type: ignore[arg-type]
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == text  # type: ignore[union-attr]


async def test_a_namespaced_call_comes_back_with_its_name_and_namespace(
    gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    fake = openai_upstream[0]
    fake.tool_calls = True
    fake.tool_name = "crm__lookup"
    fake.reasoning_pieces = []
    tools: Any = [
        {
            "type": "namespace",
            "name": "crm",
            "description": "Customer records.",
            "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
        },
        {"type": "web_search"},
    ]
    async with gw.sdk() as client:
        raw = await client.responses.with_raw_response.create(model="up", input="hi", tools=tools)
        response = raw.parse()
        async with client.responses.stream(model="up", input="hi", tools=tools) as events:
            streamed = await events.get_final_response()
    assert raw.headers["x-aichat-dropped-params"] == "tools.web_search"
    for answer in (response, streamed):
        (call,) = answer.output
        assert call.type == "function_call"
        assert (call.name, call.namespace) == ("lookup", "crm")
        assert json.loads(call.arguments) == {"city": "Paris"}
    upstream_tools = fake.requests[0]["tools"]
    assert [t["function"]["name"] for t in upstream_tools] == ["crm__lookup"]


async def test_claude_codes_system_turn_reaches_the_upstream_at_its_place(
    gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    body = {
        "model": "up",
        "max_tokens": 50,
        "messages": [
            {"role": "user", "content": "say hi"},
            {"role": "system", "content": "Answer briefly."},
        ],
    }
    headers = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
    resp = await gw.http.post(f"{gw.url}/v1/messages?beta=true", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["content"][0]["text"] == "Hi from upstream"
    sent = openai_upstream[0].requests[0]["messages"]
    assert sent == [
        {"role": "user", "content": "say hi"},
        {"role": "system", "content": "Answer briefly."},
    ]


async def test_a_field_name_with_a_line_break_is_dropped_not_a_broken_response(gw: Gateway) -> None:
    body = {"model": "up", "input": "hi", "a\r\nX-Evil: 1": 1}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    resp = await gw.http.post(f"{gw.url}/v1/responses", json=body, headers=headers)
    assert resp.status == 200
    assert "X-Evil" not in resp.headers
    assert resp.headers["x-aichat-dropped-params"] == "a??X-Evil??1"
