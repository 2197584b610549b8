"""What requests cost: in the access line and ``aichat_spend_usd_total``, as genai-prices says."""

from __future__ import annotations

import logging
import re
from decimal import Decimal

import genai_prices
import pytest

from aichat.core.config import ModelConfig, PriceConfig
from tests.conftest import Gateway, GatewayFactory, _start
from tests.e2e.test_usage import HELLO, api_lines
from tests.fakes import FakeOpenAI
from tests.fakes_native import FakeAnthropic

CACHED_USAGE = {
    "prompt_tokens": 12_000,
    "completion_tokens": 800,
    "total_tokens": 12_800,
    "prompt_tokens_details": {"cached_tokens": 9_000},
}


def _genai_usd(model: str, provider: str) -> Decimal:
    """genai-prices' price of ``CACHED_USAGE``, to the nano-dollar."""
    usage = genai_prices.Usage(input_tokens=12_000, output_tokens=800, cache_read_tokens=9_000)
    price = genai_prices.calc_price(usage, model, provider_id=provider).total_price
    return price.quantize(Decimal("1e-9"))


async def spend(gateway: Gateway) -> dict[str, float]:
    """``aichat_spend_usd_total`` of ``gateway``, by its labels."""
    metrics = await (await gateway.http.get(f"{gateway.url}/metrics")).text()
    return {
        labels: float(value)
        for labels, value in re.findall(r"^aichat_spend_usd_total\{(.*)\} (\S+)$", metrics, re.M)
    }


async def test_cost_matches_genai_prices_cached_tokens_included_and_a_local_override(
    make_gateway: GatewayFactory,
    openai_upstream: tuple[FakeOpenAI, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "aichat.access")
    fake, url = openai_upstream
    fake.usage = CACHED_USAGE
    local_price = PriceConfig(input=Decimal("0.1"), output=Decimal("0.2"), cache_read=Decimal(0))
    routes = (
        # Both upstreams are the fake on loopback: `price` names whose prices apply.
        ModelConfig(
            name="gpt", provider="openai", base_url=url, upstream_model="gpt-4o", price="openai"
        ),
        ModelConfig(
            name="claude",
            provider="openai",
            base_url=url,
            upstream_model="claude-sonnet-4-5",
            price="anthropic",
        ),
        ModelConfig(name="local", provider="openai", base_url=url, price=local_price),
    )
    gateway = await make_gateway(routes=routes)
    expected = {
        "gpt": _genai_usd("gpt-4o", "openai"),
        "claude": _genai_usd("claude-sonnet-4-5", "anthropic"),
        # 3,000 uncached input tokens at $0.10 a million, cached ones free, 800 out at $0.20.
        "local": Decimal("0.0003") + Decimal("0.00016"),
    }
    assert expected["gpt"] == Decimal("0.02675")  # 3000 x 2.5 + 9000 x 1.25 + 800 x 10, /1e6
    for model in expected:
        for stream in (False, True):
            response = await gateway.post_chat(
                {"model": model, "messages": HELLO, "stream": stream}
            )
            assert response.status == 200
            await response.read()

    lines = api_lines(caplog)
    assert [(line["route"], Decimal(line["cost_usd"])) for line in lines] == [
        (model, expected[model]) for model in expected for _ in range(2)
    ]
    assert all(line["cache_read_tokens"] == 9_000 for line in lines)
    spent = await spend(gateway)
    for model, usd in expected.items():
        labels = f'key="key-1",model="{model}",upstream="{model} (openai)"'
        assert spent[labels] == pytest.approx(2 * float(usd), rel=1e-12)


async def test_a_native_anthropic_upstream_prices_cache_writes_and_reads_as_anthropic(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aichat.access")
    fake = FakeAnthropic()
    fake.usage = {
        "input_tokens": 2_000,
        "cache_creation_input_tokens": 5_000,
        "cache_read_input_tokens": 30_000,
        "output_tokens": 700,
    }
    app_runner, url = await _start(fake.app())
    try:
        # On loopback, no URL pattern matches: the Messages API is Anthropic's, so its prices.
        route = ModelConfig(
            name="claude", provider="anthropic", base_url=url, upstream_model="claude-sonnet-4-5"
        )
        gateway = await make_gateway(routes=(route,))
        for stream in (False, True):
            response = await gateway.post_chat(
                {"model": "claude", "messages": HELLO, "stream": stream}
            )
            assert response.status == 200
            await response.read()
    finally:
        await app_runner.cleanup()
    usage = genai_prices.Usage(
        input_tokens=37_000, output_tokens=700, cache_read_tokens=30_000, cache_write_tokens=5_000
    )
    expected = genai_prices.calc_price(usage, "claude-sonnet-4-5", provider_id="anthropic")
    # $3 a million input, $3.75 cache writes, $0.30 cache reads, $15 output.
    assert expected.total_price == Decimal("0.006") + Decimal("0.01875") + Decimal(
        "0.009"
    ) + Decimal("0.0105")
    lines = api_lines(caplog)
    assert [Decimal(line["cost_usd"]) for line in lines] == [expected.total_price] * 2
    assert [line["cache_write_tokens"] for line in lines] == [5_000, 5_000]
    labels = 'key="key-1",model="claude",upstream="claude (anthropic)"'
    assert (await spend(gateway))[labels] == pytest.approx(
        2 * float(expected.total_price), rel=1e-12
    )
