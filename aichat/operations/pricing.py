"""What an answer costs in US dollars, from its token usage and the price of its model.

Decisions:

- Prices come from ``genai-prices`` (pydantic's table of provider and model prices, cached
  input and cache writes included), as bundled with the installed release: its
  ``UpdatePrices`` downloader is never started, so pricing makes no network request. A
  newer table comes with a newer pinned release.
- A route's own ``price`` (US dollars per million tokens) wins over the table; local
  models say ``price = { input = 0, output = 0 }``. aichats and mock routes cost nothing.
- Which table row: the provider a route names (``price = "openai"``: a proxy or a private
  endpoint of that provider), else the one whose URL pattern the base URL matches
  (``api.openai.com``, ``api.anthropic.com``, OpenRouter, Groq, ...), else, for an upstream
  whose API only one provider speaks (``_ONLY_PROVIDER``), that provider. A model or
  upstream the table does not know costs nothing, and is named once per process in a
  warning: a self-hosted server named like a commercial model is never billed at that
  model's price by guess. It is ``Unpriced``, not ``Free``: a key with a money budget is
  refused it (``aichat.operations.budgets``), since nothing it spends there would count.
- Counted in whole nano-dollars (1e-9 USD), rounded half to even once per answer: integers
  add up exactly in the history database and across replicas.
- Cheap on the request path: genai-prices takes about 200 microseconds to price one usage,
  so it is asked only to find each model's rates. Within a price period (rates that start
  on a date) and a tier (Anthropic's and Gemini's long-prompt prices), a price is affine in
  the token counts; its coefficients are read off genai-prices by pricing a few probe
  usages, so every rule of the table (cache writes billed as input where the model has no
  cache-write price, a per-request fee) carries over without being restated here. A usage
  that falls where two probes do not fit is priced by genai-prices itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

from aichat.core.config import ModelConfig, PriceConfig
from aichat.providers.base import Usage

log = logging.getLogger("aichat.pricing")

NANO = Decimal(1_000_000_000)  # nano-dollars per dollar
_PER_MILLION = NANO / 1_000_000  # a price per million tokens, in nano-dollars per token
FREE_KINDS = frozenset(("aichats", "mock"))  # a free web chat and the built-in mock
# Upstream kinds whose API only one provider in the table speaks, by that provider's id.
_ONLY_PROVIDER = {"anthropic": "anthropic"}
_PERIOD_CHECK = 60.0  # seconds between looks for a price period that has begun
_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True, slots=True)
class Cost:
    """One answer's cost, and what its cache reads saved against the uncached input price."""

    nano_usd: int
    saved_nano_usd: int = 0


FREE = Cost(0)


def usd(nano: int) -> str:
    """``nano`` nano-dollars as a plain decimal number of dollars: ``"0.00725"``."""
    return format(Decimal(nano).scaleb(-9).normalize(), "f")


def _nano(amount: Decimal) -> int:
    return int(amount.to_integral_value(ROUND_HALF_EVEN))


def nano_usd(dollars: Decimal) -> int:
    """``dollars`` in whole nano-dollars (half to even)."""
    return _nano(dollars * NANO)


@dataclass(frozen=True, slots=True)
class Rates:
    """An affine price, in nano-dollars: a fee per answer plus a rate per token of each kind."""

    fee: Decimal
    input: Decimal  # per uncached input token
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal

    @classmethod
    def per_million(cls, price: PriceConfig) -> Rates:
        """A route's ``price`` table (dollars per million tokens; cache prices default to input)."""
        cache_read = price.input if price.cache_read is None else price.cache_read
        cache_write = price.input if price.cache_write is None else price.cache_write
        return cls(
            Decimal(0),
            *(p * _PER_MILLION for p in (price.input, price.output, cache_read, cache_write)),
        )

    def cost(self, usage: Usage) -> Cost:
        """What ``usage`` costs at these rates."""
        read, written = usage.cache_read_tokens, usage.cache_write_tokens
        uncached = max(0, usage.prompt_tokens - read - written)
        total = (
            self.fee
            + uncached * self.input
            + read * self.cache_read
            + written * self.cache_write
            + usage.completion_tokens * self.output
        )
        return Cost(_nano(total), _nano(read * (self.input - self.cache_read)))


class Pricing(Protocol):
    """How one route's answers are priced."""

    def cost(self, usage: Usage) -> Cost:
        """What one answer with ``usage`` costs."""
        ...


class Free:
    """Answers that cost nothing."""

    def cost(self, usage: Usage) -> Cost:
        """Nothing."""
        return FREE


class Unpriced(Free):
    """A model whose price is not known: its answers count as costing nothing."""


class TablePricing:
    """A model's prices from genai-prices."""

    def __init__(self, provider: Any, model: Any) -> None:
        self._provider = provider
        self._model = model
        self._price: Any = None  # genai-prices' ModelPrice of the current period
        self._next_check = 0.0
        self._rates: dict[int, Rates | None] = {}  # per tier of the current period

    def cost(self, usage: Usage) -> Cost:
        """What ``usage`` costs now, per genai-prices."""
        now = time.time()
        if now >= self._next_check:
            price = self._model.get_prices(datetime.now(UTC))
            if price is not self._price:
                self._price, self._rates = price, {}
            self._next_check = now + _PERIOD_CHECK
        starts = _tier_starts(self._price)
        tier = sum(usage.prompt_tokens > start for start in starts)
        if tier not in self._rates:
            self._rates[tier] = self._probe(tier, starts)
        rates = self._rates[tier]
        if rates is None:
            return self._exact(usage)
        return rates.cost(usage)

    def _calc(self, prompt: int, output: int = 0, read: int = 0, written: int = 0) -> Decimal:
        from genai_prices import Usage as PricedUsage

        priced = PricedUsage(
            input_tokens=prompt,
            output_tokens=output,
            cache_read_tokens=read,
            cache_write_tokens=written,
        )
        total: Decimal = self._price.calc_price(priced)["total_price"]
        return total * NANO

    def _probe(self, tier: int, starts: list[int]) -> Rates | None:
        """The affine rates within ``tier``, from prices of usages inside it; None if too narrow."""
        low = starts[tier - 1] + 1 if tier else 1
        if tier < len(starts) and starts[tier] < low + 1:
            return None
        one, two = self._calc(low), self._calc(low + 1)
        per_input = two - one
        fee = one - low * per_input
        return Rates(
            fee,
            per_input,
            (self._calc(low, output=low) - one) / low,
            (self._calc(low, read=low) - fee) / low,
            (self._calc(low, written=low) - fee) / low,
        )

    def _exact(self, usage: Usage) -> Cost:
        read, written = usage.cache_read_tokens, usage.cache_write_tokens
        total = self._calc(usage.prompt_tokens, usage.completion_tokens, read, written)
        uncached = self._calc(usage.prompt_tokens, usage.completion_tokens, 0, written)
        return Cost(_nano(total), _nano(uncached - total))


def _tier_starts(price: Any) -> list[int]:
    """Every prompt size at which one of ``price``'s tiered rates changes, ascending."""
    from genai_prices.types import TieredPrices

    return sorted(
        {
            tier.start
            for value in vars(price).values()
            if isinstance(value, TieredPrices)
            for tier in value.tiers
        }
    )


def load_price_table() -> None:
    """Read genai-prices' table now rather than at the first route priced from it."""
    from genai_prices.data_snapshot import get_snapshot

    get_snapshot()


def _table_row(route: ModelConfig, model: str) -> tuple[Any, Any] | None:
    """genai-prices' (provider, model) for ``model`` at ``route``'s upstream, if it knows it."""
    from genai_prices.data_snapshot import get_snapshot

    ways: list[tuple[str | None, str | None]] = []
    if isinstance(route.price, str):  # the operator named the provider
        ways.append((route.price, None))
    else:
        if route.base_url:
            ways.append((None, route.base_url))
        if route.provider in _ONLY_PROVIDER:
            ways.append((_ONLY_PROVIDER[route.provider], None))
    snapshot = get_snapshot()
    for provider_id, url in ways:
        try:
            found: tuple[Any, Any] = snapshot.find_provider_model(model, None, provider_id, url)
        except LookupError:
            continue
        return found
    return None


def pricing_for(route: ModelConfig, model: str) -> Pricing:
    """How answers of ``route``'s upstream ``model`` are priced (warns once if unknown)."""
    if isinstance(route.price, PriceConfig):
        return Rates.per_million(route.price)
    if route.provider in FREE_KINDS and route.price is None:
        return Free()
    row = _table_row(route, model)
    if row is not None:
        return TablePricing(*row)
    where = route.base_url or route.provider
    if (where, model) not in _warned:
        _warned.add((where, model))
        log.warning(
            "no price known for model %r at %s: its answers count as costing nothing, and keys "
            "with a money budget cannot use it; set price = { input = ..., output = ... } on "
            'its [[models]] table (name = "%s")',
            model,
            where,
            route.name,
        )
    return Unpriced()
