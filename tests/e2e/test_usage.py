"""Token usage per key and token budgets, end to end through every inbound API."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import anthropic
import openai
import pytest

from aichat.core.config import KeyConfig, ModelConfig
from aichat.core.tokens import EXACT_UP_TO, count_tokens
from aichat.operations.budgets import window_resets
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.fakes import FakeAichats, FakeOpenAI, json_events, sse_events

HELLO = [{"role": "user", "content": "hi"}]
UP = "up (openai)"  # the fake OpenAI upstream's label in metrics


async def tokens(gateway: Gateway) -> dict[tuple[str, str, str, str], float]:
    """``aichat_tokens_total`` by (key, model, upstream, kind), as scraped."""
    text = await (await gateway.http.get(f"{gateway.url}/metrics")).text()
    found = {}
    for labels, value in re.findall(r"^aichat_tokens_total\{(.*)\} (\S+)$", text, re.M):
        named = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        found[(named["key"], named["model"], named["upstream"], named["kind"])] = float(value)
    return found


def api_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The fields of each API request's access-log line."""
    lines = [getattr(r, "fields", {}) for r in caplog.records if r.name == "aichat.access"]
    return [fields for fields in lines if fields["path"].startswith("/v1/")]


def counted(found: dict[tuple[str, str, str, str], float], model: str = "up") -> tuple[int, int]:
    """(prompt, completion) tokens of key-1 on ``model``."""
    label = UP if model == "up" else f"{model} (mock)" if model == "echo" else f"{model} (aichats)"
    prompt = found.get(("key-1", model, label, "prompt"), 0)
    return int(prompt), int(found.get(("key-1", model, label, "completion"), 0))


@pytest.fixture
async def gw(make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]) -> Gateway:
    routes = (
        ModelConfig(name="up", provider="openai", base_url=openai_upstream[1]),
        ModelConfig(name="echo", provider="mock"),
        ModelConfig(name="gpt-4o", provider="aichats"),
    )
    return await make_gateway(routes=routes)


def _claude(gateway: Gateway) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.url, api_key=API_KEY, max_retries=0)


async def test_pass_through_stream_counts_upstream_usage_the_client_did_not_ask_for(
    gw: Gateway, openai_upstream: tuple[FakeOpenAI, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aichat.access")
    up = openai_upstream[0]
    response = await gw.post_chat({"model": "up", "messages": HELLO, "stream": True})
    events = json_events(await response.read())
    assert up.requests[-1]["stream_options"] == {"include_usage": True}
    assert all("usage" not in event or event["usage"] is None for event in events)
    assert all(event["choices"] for event in events)  # the usage-only chunk stayed back
    assert counted(await tokens(gw)) == (7, 3)
    (fields,) = api_lines(caplog)
    assert (fields["prompt_tokens"], fields["completion_tokens"]) == (7, 3)


async def test_pass_through_usage_reaches_a_client_that_asked(gw: Gateway) -> None:
    async with gw.sdk() as client:
        stream = await client.chat.completions.create(
            model="up", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    async with gw.sdk() as client:
        whole = await client.chat.completions.create(model="up", messages=HELLO)
    assert whole.usage is not None and whole.usage.total_tokens == 10
    assert counted(await tokens(gw)) == (14, 6)


async def test_responses_and_messages_count_like_chat_completions(gw: Gateway) -> None:
    async with gw.sdk() as client:
        await client.responses.create(model="up", input="hi")
        async with client.responses.stream(model="up", input="hi") as stream:
            await stream.get_final_response()
    async with _claude(gw) as claude:
        await claude.messages.create(model="up", max_tokens=50, messages=HELLO)  # type: ignore[arg-type]
        async with claude.messages.stream(
            model="up",
            max_tokens=50,
            messages=HELLO,  # type: ignore[arg-type]
        ) as stream:
            await stream.get_final_message()
    assert counted(await tokens(gw)) == (4 * 7, 4 * 3)


async def test_local_count_matches_the_usage_the_client_is_told(gw: Gateway) -> None:
    async with gw.sdk() as client:
        whole = await client.chat.completions.create(model="gpt-4o", messages=HELLO)
        stream = await client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "one two three four"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert whole.usage is not None and chunks[-1].usage is not None
    found = await tokens(gw)
    assert counted(found, "gpt-4o") == (whole.usage.prompt_tokens, whole.usage.completion_tokens)
    echo = chunks[-1].usage
    assert counted(found, "echo") == (echo.prompt_tokens, echo.completion_tokens)


async def test_a_stream_cut_short_still_counts_what_was_sent(
    gw: Gateway, openai_upstream: tuple[FakeOpenAI, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aichat.access")
    openai_upstream[0].drop_after = 3  # role chunk and two text chunks, then a cut
    response = await gw.post_chat({"model": "up", "messages": HELLO, "stream": True})
    raw = await response.read()
    assert "[DONE]" not in sse_events(raw)
    prompt, completion = counted(await tokens(gw))
    assert prompt > 0 and completion == 3  # one per chunk the client got
    (fields,) = api_lines(caplog)
    assert fields["completion_tokens"] == 3


async def test_a_key_over_its_budget_gets_insufficient_quota_in_each_api_shape(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    route = ModelConfig(name="up", provider="openai", base_url=openai_upstream[1])
    budgeted = KeyConfig(name="capped", key_env="X", key="sk-capped", tokens_per_day=15)
    gateway = await make_gateway(routes=(route,), keys=(budgeted,))
    first = await gateway.post_chat({"model": "up", "messages": HELLO}, key="sk-capped")
    assert first.status == 200
    assert first.headers["x-aichat-budget-remaining-tokens-day"] == "15"
    # 10 of 15 used: the next request starts under the budget, finishes, and counts.
    second = await gateway.post_chat(
        {"model": "up", "messages": HELLO, "stream": True}, "sk-capped"
    )
    assert sse_events(await second.read())[-1] == "[DONE]"
    assert second.headers["x-aichat-budget-remaining-tokens-day"] == "5"
    async with gateway.sdk("sk-capped") as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="up", messages=HELLO)
        with pytest.raises(openai.RateLimitError) as responses:
            await client.responses.create(model="up", input="hi")
    assert info.value.code == responses.value.code == "insufficient_quota"
    headers = info.value.response.headers
    assert headers["x-aichat-budget-remaining-tokens-day"] == "0"
    reset = window_resets(time.time())[0]
    assert headers["x-aichat-budget-reset-day"] == reset.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert 0 < int(headers["Retry-After"]) <= 86400
    claude = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="sk-capped", max_retries=0)
    async with claude:
        with pytest.raises(anthropic.RateLimitError) as refused:
            await claude.messages.create(model="up", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "token budget" in refused.value.message
    # Other keys are not limited by it.
    assert (await gateway.post_chat({"model": "up", "messages": HELLO})).status == 200


@pytest.mark.parametrize(("failure", "status"), [("open", 200), ("closed", 503)])
async def test_budgets_with_redis_down_fail_open_or_closed_as_configured(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture, failure: str, status: int
) -> None:
    caplog.set_level(logging.WARNING, "aichat.budgets")
    budgeted = KeyConfig(name="capped", key_env="X", key="sk-capped", tokens_per_day=15)
    gateway = await make_gateway(
        routes=(ModelConfig(name="echo", provider="mock"),),
        keys=(budgeted,),
        redis_url="redis://127.0.0.1:1/0",  # nothing listens there
        redis_failure=failure,
    )
    response = await gateway.post_chat({"model": "echo", "messages": HELLO}, key="sk-capped")
    assert response.status == status, await response.text()
    if failure == "open":
        assert "usage store unavailable" in caplog.text
    else:
        assert (await response.json())["error"]["code"] == "usage_store_unavailable"


async def test_a_long_answer_counted_locally_is_estimated_past_the_exact_bound(
    gw: Gateway, fake: FakeAichats
) -> None:
    fake.pieces = ["word " * 1000] * 20  # 100 000 characters, past EXACT_UP_TO
    response = await gw.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert sse_events(await response.read())[-1] == "[DONE]"
    assert EXACT_UP_TO < 100_000
    assert counted(await tokens(gw), "gpt-4o")[1] == 100_000 // 4
    # A prompt past the bound is estimated the same way.
    long_prompt = [{"role": "user", "content": "x" * 40_000}]
    await gw.post_chat({"model": "gpt-4o", "messages": long_prompt})
    # "hi" (7), then the estimate with the same per-message and priming tokens (3 + 3).
    assert counted(await tokens(gw), "gpt-4o")[0] == 7 + 6 + 40_000 // 4


async def test_an_upstream_that_reports_no_usage_is_counted_here(
    gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    openai_upstream[0].report_usage = False
    whole = await gw.post_chat({"model": "up", "messages": HELLO})
    assert "usage" not in await whole.json()
    prompt, completion = counted(await tokens(gw))
    assert (prompt, completion) == (7, count_tokens("Hi from upstream"))  # "hi": 3 + 3 + 1
    streamed = await gw.post_chat({"model": "up", "messages": HELLO, "stream": True})
    chunks = json_events(await streamed.read())
    assert counted(await tokens(gw)) == (14, completion + len(chunks))  # a token a chunk
