"""``GET /usage/api``: behind AICHAT_ADMIN_KEY, checked parameters, the history of real requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aichat.core.config import ModelConfig, PriceConfig
from tests.conftest import Gateway, GatewayFactory

ADMIN = "sk-admin-for-tests-0123"
PRICE = PriceConfig(input=Decimal(2), output=Decimal(8))


async def get(gateway: Gateway, query: str, key: str | None = ADMIN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with gateway.http.get(f"{gateway.url}/usage/api{query}", headers=headers) as response:
        return response.status, await response.json()


async def test_off_without_an_admin_key_and_refused_with_a_wrong_one(
    make_gateway: GatewayFactory,
) -> None:
    off = await make_gateway()
    status, body = await get(off, "")
    assert status == 404 and "AICHAT_ADMIN_KEY" in body["error"]["message"]
    on = await make_gateway(admin_key=ADMIN)
    assert (await get(on, "", key="sk-wrong"))[0] == 401
    assert (await get(on, "", key=None))[0] == 401
    page = await on.http.get(f"{on.url}/usage")  # the page holds no data: no key needed
    assert page.status == 200 and "Content-Security-Policy" in page.headers


async def test_parameters_are_checked(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(admin_key=ADMIN)
    for query, param in (
        ("?since=yesterday", "since"),
        ("?since=2026-12-02&until=2026-12-01", "since"),
        ("?since=2020-01-01&until=2026-12-01", "since"),
        ("?by=colour", "by"),
    ):
        status, body = await get(gateway, query)
        assert (status, body["error"]["param"]) == (400, param), query


async def test_reports_what_requests_used_and_cost(make_gateway: GatewayFactory) -> None:
    route = ModelConfig(name="echo", provider="mock", price=PRICE)
    gateway = await make_gateway(admin_key=ADMIN, routes=(route,))
    usages = []
    for words in (1, 5, 9):
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi " * words}]}
        response = await gateway.post_chat(body)
        usages.append((await response.json())["usage"])
    today = datetime.now(UTC).date().isoformat()
    for _ in range(50):  # the history is written every second
        _, report = await get(gateway, f"?since={today}&until={today}&by=model")
        if report["totals"]["requests"] == 3:
            break
        await asyncio.sleep(0.1)
    prompt = sum(u["prompt_tokens"] for u in usages)
    completion = sum(u["completion_tokens"] for u in usages)
    cost = float((prompt * 2 + completion * 8) / Decimal(1_000_000))
    assert report["days"] == [today]
    assert report["series"] == [
        {"name": "echo", "cost_usd": [cost], "tokens": [prompt + completion]}
    ]
    assert report["totals"] | {"cost_usd": cost} == {
        "requests": 3,
        "input_tokens": prompt,
        "output_tokens": completion,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": report["totals"]["cost_usd"],
        "cache_saved_usd": 0.0,
        "cache_read_share": 0.0,
    }
    assert report["top_keys"][0]["key"] == "key-1" and report["budgets"] == []
