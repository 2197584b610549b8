"""Prices: every answer costs what genai-prices says, a route's own price wins, unknowns are
free (and unpriced), and the worst case a money budget holds."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices import calc_price
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice
from hypothesis import given, settings
from hypothesis import strategies as st

from aichat.answer.routing import Target
from aichat.answer.usage import worst_cost
from aichat.core.config import ConfigError, ModelConfig, PriceConfig, load_config_file
from aichat.operations import pricing
from aichat.operations.budgets import PriceUnknown
from aichat.operations.pricing import Cost, TablePricing, Unpriced, pricing_for, usd
from aichat.providers.base import Usage
from aichat.providers.mock import MockProvider


def _priced_models() -> list[tuple[str, str]]:
    """(provider id, model id) of every model priced per token that its own id finds."""
    snapshot = get_snapshot()
    found = []
    for provider in snapshot.providers:
        for model in provider.models:
            try:
                if snapshot.find_provider_model(model.id, None, provider.id, None)[1] is not model:
                    continue
            except LookupError:
                continue
            prices = [model.prices] if isinstance(model.prices, ModelPrice) else []
            prices += [c.prices for c in model.prices] if isinstance(model.prices, list) else []
            if any(getattr(p, "input_mtok", None) is not None for p in prices):
                found.append((provider.id, model.id))
    return found


PRICED = _priced_models()


def _genai(usage: Usage, model: str, **where: Any) -> Decimal:
    """genai-prices' own price of ``usage``, in nano-dollars."""
    priced = genai_prices.Usage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )
    return calc_price(priced, model, **where).total_price * 1_000_000_000


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    prompt = draw(st.one_of(st.integers(0, 3000), st.integers(0, 1_200_000)))
    read = draw(st.integers(0, prompt))
    written = draw(st.integers(0, prompt - read))
    return Usage(prompt, draw(st.integers(0, 200_000)), read, written)


@settings(max_examples=400, deadline=None)
@given(model=st.sampled_from(PRICED), usage=usages())
def test_every_priced_model_costs_what_genai_prices_says(
    model: tuple[str, str], usage: Usage
) -> None:
    provider_id, model_id = model
    route = ModelConfig(name="m", provider="openai", base_url="http://x/v1", price=provider_id)
    cost = pricing_for(route, model_id).cost(usage)
    expected = _genai(usage, model_id, provider_id=provider_id)
    assert cost.nano_usd == int(expected.to_integral_value())


def test_tiered_prices_change_at_the_threshold_as_genai_prices_says() -> None:
    route = ModelConfig(name="c", provider="openai", base_url="https://api.anthropic.com/v1")
    priced = pricing_for(route, "claude-sonnet-4-5")
    assert isinstance(priced, TablePricing)
    for prompt in (199_999, 200_000, 200_001, 500_000):
        usage = Usage(prompt, 1000, 1000, 500)
        expected = _genai(usage, "claude-sonnet-4-5", provider_id="anthropic")
        assert priced.cost(usage).nano_usd == int(expected.to_integral_value())
    cheap, dear = (priced.cost(Usage(n, 1000)).nano_usd / n for n in (200_000, 200_001))
    assert dear > cheap * 1.5


def test_cache_reads_cost_less_and_what_they_saved_is_counted() -> None:
    route = ModelConfig(name="o", provider="openai", base_url="https://api.openai.com/v1")
    priced = pricing_for(route, "gpt-4o")
    cold, warm = priced.cost(Usage(10_000, 100)), priced.cost(Usage(10_000, 100, 8_000))
    # gpt-4o: $2.50 per million input tokens, $1.25 cached, $10 output.
    assert cold == Cost(25_000_000 + 1_000_000, 0)
    assert warm == Cost(2_000 * 2_500 + 8_000 * 1_250 + 1_000_000, 8_000 * 1_250)


def test_a_routes_own_price_wins_and_prices_cache_reads_and_writes_as_given() -> None:
    own = PriceConfig(
        input=Decimal("2.5"),
        output=Decimal(10),
        cache_read=Decimal("1.25"),
        cache_write=Decimal("3.125"),
    )
    route = ModelConfig(
        name="o", provider="openai", base_url="https://api.openai.com/v1", price=own
    )
    cost = pricing_for(route, "gpt-4o").cost(Usage(1_000_000, 1_000_000, 200_000, 100_000))
    assert usd(cost.nano_usd) == str(
        Decimal("0.7") * Decimal("2.5") + 10 + Decimal("0.25") + Decimal("0.3125")
    )
    assert cost.saved_nano_usd == 200_000 * 1_250


def test_cache_prices_left_out_are_the_input_price() -> None:
    route = ModelConfig(
        name="local",
        provider="openai",
        base_url="http://127.0.0.1:8080/v1",
        price=PriceConfig(input=Decimal("0.1"), output=Decimal("0.2")),
    )
    assert pricing_for(route, "qwen").cost(Usage(1000, 1000, 400, 300)) == Cost(300_000)


def test_a_local_model_priced_at_zero_is_free_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = ModelConfig(
        name="llama",
        provider="openai",
        base_url="http://127.0.0.1:11434/v1",
        price=PriceConfig(input=Decimal(0), output=Decimal(0)),
    )
    assert pricing_for(route, "llama3.1").cost(Usage(10, 10)) == Cost(0)
    assert not caplog.records


def test_an_unknown_model_is_free_and_named_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "aichat.pricing")
    route = ModelConfig(name="local", provider="openai", base_url="http://127.0.0.1:9/v1")
    for _ in range(3):
        unknown = pricing_for(route, "my-finetune-7")
        assert isinstance(unknown, Unpriced) and unknown.cost(Usage(1000, 1000)) == Cost(0)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "'my-finetune-7'" in warning and "http://127.0.0.1:9/v1" in warning
    assert 'name = "local"' in warning and "money budget cannot use it" in warning


def test_a_commercial_name_on_an_unknown_server_is_not_billed_by_guess() -> None:
    route = ModelConfig(name="gpt-4o", provider="openai", base_url="http://10.0.0.5:8000/v1")
    assert isinstance(pricing_for(route, "gpt-4o"), Unpriced)


def _target(route: ModelConfig) -> Target:
    provider = MockProvider(None, 0, 0)
    pricing = pricing_for(route, route.target_model)
    return Target(route.name, provider, route.target_model, pricing=pricing, max_tokens=500)


def test_a_money_worst_case_is_the_dearest_the_chain_may_charge() -> None:
    claude = ModelConfig(name="claude", provider="anthropic", upstream_model="claude-sonnet-4-5")
    local = ModelConfig(
        name="local",
        provider="openai",
        base_url="http://127.0.0.1:9/v1",
        price=PriceConfig(input=Decimal(5), output=Decimal(1)),
    )
    chain = [_target(local), _target(claude)]
    # Anthropic bills cache writes above input: a prompt all written to the cache costs most.
    dearest = _genai(Usage(1000, 500, 0, 1000), "claude-sonnet-4-5", provider_id="anthropic")
    assert dearest > _genai(Usage(1000, 500), "claude-sonnet-4-5", provider_id="anthropic")
    assert worst_cost(chain, 1000, None) == dearest  # the route's max_tokens, 500
    # The local route's dearer input wins on a long prompt and a short answer.
    assert worst_cost(chain, 100_000, 1) == 100_000 * 5_000 + 1_000


def test_a_chain_with_a_model_of_unknown_price_has_no_worst_case() -> None:
    unknown = ModelConfig(name="mine", provider="openai", base_url="http://127.0.0.1:9/v1")
    free = ModelConfig(name="free", provider="mock")
    assert worst_cost([_target(free)], 1000, None) == 0  # known to cost nothing
    with pytest.raises(PriceUnknown, match="'mine' has no known price"):
        worst_cost([_target(free), _target(unknown)], 1000, None)


@pytest.mark.parametrize(
    ("base_url", "model", "provider"),
    [
        ("https://api.openai.com/v1", "gpt-4o-mini", "openai"),
        ("https://api.anthropic.com/v1", "claude-haiku-4-5", "anthropic"),
        ("https://openrouter.ai/api/v1", "anthropic/claude-sonnet-4", "openrouter"),
        ("https://api.groq.com/openai/v1", "llama-3.3-70b-versatile", "groq"),
        ("https://api.deepseek.com/v1", "deepseek-chat", "deepseek"),
    ],
)
def test_an_upstream_is_found_by_its_base_url(base_url: str, model: str, provider: str) -> None:
    route = ModelConfig(name="m", provider="openai", base_url=base_url)
    usage = Usage(12_345, 678, 2_000)
    expected = _genai(usage, model, provider_id=provider)
    assert pricing_for(route, model).cost(usage).nano_usd == int(expected.to_integral_value())


def test_aichats_and_mock_routes_cost_nothing() -> None:
    for kind in ("aichats", "mock"):
        route = ModelConfig(name="gpt-4o", provider=kind)  # type: ignore[arg-type]
        assert pricing_for(route, "gpt-4o").cost(Usage(1000, 1000)) == Cost(0)


def test_a_named_provider_must_exist(tmp_path: Path) -> None:
    config = tmp_path / "aichat.toml"
    config.write_text(
        '[[models]]\nname = "m"\nprovider = "openai"\nbase_url = "http://x/v1"\nprice = "opnai"\n'
    )
    with pytest.raises(ConfigError, match="price: genai-prices knows no provider 'opnai'"):
        load_config_file(config, {})
    config.write_text(config.read_text().replace("opnai", "openai"))
    ((route,), _) = load_config_file(config, {})
    assert route.price == "openai"


def test_prices_come_from_the_installed_table_and_are_never_downloaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx2

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("genai-prices tried to download prices")

    monkeypatch.setattr(httpx2, "get", no_network)
    route = ModelConfig(name="o", provider="openai", base_url="https://api.openai.com/v1")
    assert pricing_for(route, "gpt-4o").cost(Usage(100, 100)).nano_usd > 0
    assert not get_snapshot().from_auto_update
    assert pricing.__doc__ is not None and "never started" in pricing.__doc__


def test_costs_are_printed_as_plain_dollars() -> None:
    assert [usd(n) for n in (0, 1, 7_250_000, 2_000_000_000)] == [
        "0",
        "0.000000001",
        "0.00725",
        "2",
    ]
