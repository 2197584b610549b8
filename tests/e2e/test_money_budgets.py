"""Money budgets end to end: refused in each API's shape with dollars left in headers, a
model of unknown price refused, a running request finishing past the budget and counted."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from aichat.core.config import KeyConfig, ModelConfig, PriceConfig
from aichat.operations.budgets import window_resets
from tests.conftest import Gateway, GatewayFactory
from tests.e2e.test_usage import HELLO
from tests.fakes import FakeAichats, FakeOpenAI, json_events, sse_events

ADMIN = "admin-0123456789"
KEY = "sk-spender-0123456789"
# A dollar per thousand tokens, in and out: a request's cost is its total tokens x $0.001.
DEAR = PriceConfig(input=Decimal(1000), output=Decimal(1000))
PER_TOKEN = Decimal("0.001")


def _spender(usd_per_day: str) -> KeyConfig:
    return KeyConfig(name="spender", key_env="X", key=KEY, usd_per_day=Decimal(usd_per_day))


def _cost(body: dict[str, Any]) -> Decimal:
    return body["usage"]["total_tokens"] * PER_TOKEN


async def _budgets(gateway: Gateway) -> list[dict[str, Any]]:
    """The usage API's budgets, as the usage page shows them."""
    async with gateway.http.get(
        f"{gateway.url}/usage/api", headers={"Authorization": f"Bearer {ADMIN}"}
    ) as response:
        found: list[dict[str, Any]] = (await response.json())["budgets"]
        return found


async def test_a_key_over_its_money_budget_gets_insufficient_quota_with_dollars_in_headers(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    routes = (
        ModelConfig(name="priced", provider="aichats", price=DEAR),
        # The fake OpenAI upstream on loopback: no table knows its model's price.
        ModelConfig(name="unpriced", provider="openai", base_url=openai_upstream[1]),
        ModelConfig(name="falls-back", provider="aichats", price=DEAR, fallbacks=("unpriced",)),
    )
    gateway = await make_gateway(routes=routes, keys=(_spender("0.025"),), admin_key=ADMIN)
    first = await gateway.post_chat({"model": "priced", "messages": HELLO}, key=KEY)
    assert first.status == 200
    cost = _cost(await first.json())
    assert 2 * cost < Decimal("0.025") <= 3 * cost, cost  # three start under it, not a fourth
    assert first.headers["x-aichat-budget-limit-usd-day"] == "0.025"
    assert first.headers["x-aichat-budget-remaining-usd-day"] == "0.025"
    reset = window_resets(time.time())[0].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert first.headers["x-aichat-budget-reset-day"] == reset
    assert "x-aichat-budget-limit-tokens-day" not in first.headers  # no token budget
    second = await gateway.post_chat(
        {"model": "priced", "messages": HELLO, "stream": True}, key=KEY
    )
    assert sse_events(await second.read())[-1] == "[DONE]"
    assert Decimal(second.headers["x-aichat-budget-remaining-usd-day"]) == Decimal("0.025") - cost
    async with gateway.sdk(KEY) as client:
        await client.responses.create(model="priced", input="hi")
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="priced", messages=HELLO)  # type: ignore[arg-type]
    assert info.value.code == "insufficient_quota"
    assert "money budget: 0.025 US dollars per day" in info.value.message
    headers = info.value.response.headers
    assert headers["x-aichat-budget-remaining-usd-day"] == "0"
    assert headers["x-aichat-budget-reset-day"] == reset
    assert 0 < int(headers["Retry-After"]) <= 86400
    claude = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    async with claude:
        with pytest.raises(anthropic.RateLimitError) as refused:
            await claude.messages.create(model="priced", max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]

    # What the page shows: the history's exact sum, in dollars.
    (budget,) = await _budgets(gateway)
    assert budget["unit"] == "usd" and budget["window"] == "day" and budget["limit"] == 0.025
    used = await (await gateway.post_chat({"model": "priced", "messages": HELLO})).json()
    assert budget["used"] == float(3 * cost) == float(3 * _cost(used))

    # A model whose price is not known cannot be spent on under a money budget, even as a
    # fallback; a key without one uses it as before.
    for model in ("unpriced", "falls-back"):
        unknown = await gateway.post_chat({"model": model, "messages": HELLO}, key=KEY)
        assert unknown.status == 403
        error = (await unknown.json())["error"]
        assert error["code"] == "model_not_priced" and "'unpriced'" in error["message"]
    assert (await gateway.post_chat({"model": "unpriced", "messages": HELLO})).status == 200


async def test_a_running_request_finishes_past_the_money_budget_and_all_of_it_counts(
    make_gateway: GatewayFactory, fake: FakeAichats
) -> None:
    fake.pieces = ["word " * 40]
    fake.gate = asyncio.Event()  # the answer waits after its first write
    route = ModelConfig(name="priced", provider="aichats", price=DEAR)
    gateway = await make_gateway(routes=(route,), keys=(_spender("0.01"),), admin_key=ADMIN)
    body = {
        "model": "priced",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 100,
    }
    async with gateway.http.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
    ) as running:
        assert running.status == 200
        await running.content.readuntil(b"\n\n")  # under way: its worst case ($0.1+) is held
        while_running = await gateway.post_chat({"model": "priced", "messages": HELLO}, key=KEY)
        assert while_running.status == 429
        assert while_running.headers["x-aichat-budget-remaining-usd-day"] == "0"
        fake.gate.set()
        rest = await running.read()
    assert sse_events(rest)[-1] == "[DONE]"  # never cut, though it costs 4 times the budget
    cost = _cost(json_events(rest)[-1])  # the usage chunk the client asked for
    assert cost > Decimal("0.04")
    # Counted in full (the charge is made as the stream closes: wait for it, not for a time).
    for _ in range(100):
        (budget,) = await _budgets(gateway)
        if budget["used"]:
            break
        await asyncio.sleep(0.05)
    assert budget["used"] == float(cost)
    after = await gateway.post_chat({"model": "priced", "messages": HELLO}, key=KEY)
    assert after.status == 429
    assert after.headers["x-aichat-budget-remaining-usd-day"] == "0"
    # Other keys are not limited by it.
    assert (await gateway.post_chat({"model": "priced", "messages": HELLO})).status == 200
