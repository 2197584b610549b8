"""Usage per key: counted once per answer, for every inbound API, streamed or whole.

Decisions:

- Counted where every answer passes: its provider events, seen by a ``Meter`` that
  ``aichat.answer.answering`` hands to ``aichat.operations.timing.Timed`` (no iterator layer
  of its own). What the upstream reported wins; otherwise the prompt and the text the
  upstream sent are counted here, so a stream cut short still counts what was sent.
- An upstream's own words (raw chunks and events) are not parsed here: each provider reads
  the usage they report and hands it over on the event (for Chat Completions, looking only at
  the chunk that can hold it; for Messages and Responses, at the events that carry it). A
  raw stream cut before its usage counts one token per chunk or event forwarded: upstreams
  send about one token per chunk, and parsing every chunk to count exactly would cost every
  stream what only broken ones need.
- Bounded: the tokenizer counts at most ``EXACT_UP_TO`` characters of a prompt or an answer
  (``aichat.core.tokens``); of a longer answer only the length is kept, so a huge answer
  costs neither memory nor a long stall of the event loop.
- Recorded when the handler closes the answer's events, which it does on every path, a
  client leaving included; recording never awaits, so a cancelled task loses nothing.
- Budgets are admitted here, where the request's route chain is known: a money budget holds
  the dearest price its route or a fallback could charge for the worst case
  (``aichat.operations.budgets`` says why a chain with an unpriced target is refused).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from aichat.answer.routing import Target
from aichat.answer.state import SETTINGS
from aichat.answer.translate import counted_usage
from aichat.core.errors import UpstreamError
from aichat.core.exchange import Exchange
from aichat.core.prompt import Prompt
from aichat.core.tokens import TextTally, prompt_tokens
from aichat.operations.budgets import Budgets, Hold, PriceUnknown, Unit, key_budgets
from aichat.operations.history import HISTORY, History
from aichat.operations.link import WORKER_LINK
from aichat.operations.metrics import METRICS, LabelledCounts
from aichat.operations.pricing import Cost, Unpriced, usd
from aichat.operations.redis_pool import REDIS_POOL
from aichat.operations.shared import usage_store
from aichat.providers.base import (
    Event,
    RawBody,
    RawChunks,
    RawCompletion,
    RawEvents,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from aichat.providers.neutral import reader
from aichat.providers.openai_events import completion_events


class Ledger:
    """Where every answer's tokens and cost go: metrics, budgets and the usage history."""

    def __init__(
        self, registry: CollectorRegistry, budgets: Budgets, history: History | None = None
    ) -> None:
        self.budgets = budgets
        self.history = history
        self._spend = LabelledCounts(
            "aichat_spend_usd",
            "US dollars spent, by client key, routed model and answering upstream.",
            ("key", "model", "upstream"),
        )
        registry.register(self._spend)
        self._tokens = LabelledCounts(
            "aichat_tokens",
            "Tokens by client key, routed model, answering upstream and kind (prompt, "
            "completion; cache_read and cache_write are the parts of prompt the upstream read "
            "from or wrote to its prompt cache, reasoning the part of completion it reported "
            "as spent reasoning).",
            ("key", "model", "upstream", "kind"),
        )
        registry.register(self._tokens)

    def record(self, key: str, model: str, upstream: str, usage: Usage, cost: Cost) -> None:
        """Count one answer's tokens and cost."""
        self._spend.add((key, model, upstream), cost.nano_usd / 1e9)
        if self.history is not None:
            self.history.add(key, model, upstream, usage, cost)
        self._tokens.add((key, model, upstream, "prompt"), usage.prompt_tokens)
        self._tokens.add((key, model, upstream, "completion"), usage.completion_tokens)
        if usage.cache_read_tokens:
            self._tokens.add((key, model, upstream, "cache_read"), usage.cache_read_tokens)
        if usage.cache_write_tokens:
            self._tokens.add((key, model, upstream, "cache_write"), usage.cache_write_tokens)
        if usage.reasoning_tokens:
            self._tokens.add((key, model, upstream, "reasoning"), usage.reasoning_tokens)
        self.budgets.charge(key, usage, cost.nano_usd)


LEDGER = web.AppKey("ledger", Ledger)


class Meter:
    """What one answer costs, from the events it sees; recorded once, when closed."""

    __slots__ = ("_chunks", "_prompt", "_record", "_text", "_usage")

    def __init__(self, prompt: Prompt, record: Callable[[Usage], None]) -> None:
        self._prompt = prompt
        self._record: Callable[[Usage], None] | None = record
        self._usage: Usage | None = None
        self._text = TextTally()
        self._chunks = 0

    def see(self, event: Event) -> None:
        """Count one event of the answer."""
        if isinstance(event, RawChunks):
            self._chunks += len(event.jsons)
            if event.usage is not None:
                self._usage = event.usage
        elif isinstance(event, (TextDelta, ReasoningDelta)):  # a tuple: quicker than a union
            self._text.add(event.text)
        elif isinstance(event, ToolCallDelta):
            self._text.add(event.arguments)
        elif isinstance(event, RawEvents):
            self._chunks += event.count
            if event.usage is not None:
                self._usage = event.usage
        elif isinstance(event, Usage):
            self._usage = event
        elif isinstance(event, RawCompletion):
            if event.usage is not None:
                self._usage = event.usage
            else:  # a whole answer without usage: its text is counted (rare, and once)
                with contextlib.suppress(UpstreamError):
                    for inner in completion_events(event.json)[0]:
                        self.see(inner)
        elif isinstance(event, RawBody):
            if event.usage is not None:
                self._usage = event.usage
            else:
                with contextlib.suppress(UpstreamError):
                    for inner in reader(event.api).whole(event.data):
                        self.see(inner)

    def usage(self) -> Usage:
        """What the upstream reported, or else the local count of what it sent."""
        if self._usage is not None:
            return self._usage
        return counted_usage(self._prompt.texts(), self._chunks + self._text.tokens())

    def close(self) -> None:
        """Record the usage, once."""
        record, self._record = self._record, None
        if record is not None:
            record(self.usage())


def worst_cost(chain: Sequence[Target], prompt_size: int, max_tokens: int | None) -> int:
    """The most, in nano-dollars, any target of ``chain`` may charge for a prompt of
    ``prompt_size`` tokens and an answer of ``max_tokens`` (or its route's): the prompt at the
    dearest of its input, cache-read and cache-write prices. ``PriceUnknown`` for a target
    without a known price."""
    worst = 0
    for target in chain:
        if isinstance(target.pricing, Unpriced):
            raise PriceUnknown(
                f"The model '{target.name}' has no known price, so this key's money budget "
                "cannot count it; the gateway's operator can set `price` on its [[models]] "
                "table.",
                param="model",
            )
        answer = max_tokens or target.max_tokens
        for read, written in ((0, 0), (prompt_size, 0), (0, prompt_size)):
            usage = Usage(prompt_size, answer, read, written)
            worst = max(worst, target.pricing.cost(usage).nano_usd)
    return worst


async def admit(
    app: web.Application, exchange: Exchange, prompt: Prompt, chain: Sequence[Target]
) -> tuple[Hold, ...]:
    """Refuse a key over one of its budgets, else hold the request's worst case (its prompt
    and its max_tokens, or the route's, in tokens and at its chain's prices) until it ends;
    its budget headers go on the answer."""
    ledger = app.get(LEDGER)
    budgets = () if ledger is None else ledger.budgets.by_key.get(exchange.key.name, ())
    if ledger is None or not budgets:
        return ()  # most keys have no budget: no await, no count for them
    prompt_size = prompt_tokens(prompt.texts())
    worst: dict[Unit, int] = {"tokens": prompt_size + (prompt.max_tokens or chain[0].max_tokens)}
    if any(budget.unit == "usd" for budget in budgets):
        worst["usd"] = worst_cost(chain, prompt_size, prompt.max_tokens)
    return await ledger.budgets.admit(exchange, worst)


def release(app: web.Application, holds: tuple[Hold, ...]) -> None:
    """Give back what a request that never got an answer held."""
    ledger = app.get(LEDGER)
    if ledger is not None:
        ledger.budgets.release(holds)


def meter(
    app: web.Application,
    exchange: Exchange,
    prompt: Prompt,
    model: str,
    target: Target,
    holds: tuple[Hold, ...] = (),
) -> Meter:
    """A meter recording an answer's tokens for the request's key when it closes, and
    releasing what the request held of its budget.

    ``model`` is the routed name's metric name (never what a client typed, nor what an
    upstream listed: labels must stay bounded).
    """
    ledger = app.get(LEDGER)
    key = exchange.key.name
    upstream = target.metric_label

    def record(usage: Usage) -> None:
        cost = target.pricing.cost(usage)
        exchange.note(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usd(cost.nano_usd),
        )
        if usage.cache_read_tokens or usage.cache_write_tokens:
            exchange.note(
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            )
        if usage.reasoning_tokens:
            exchange.note(reasoning_tokens=usage.reasoning_tokens)
        if ledger is not None:
            ledger.record(key, model, upstream, usage, cost)
            ledger.budgets.release(holds)  # after the charge: never counted by neither

    return Meter(prompt, record)


async def usage_ledger(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the ledger and its store, which writes what is pending on the way out."""
    settings = app[SETTINGS]
    store = usage_store(settings, app.get(REDIS_POOL), app.get(WORKER_LINK))
    fail_open = settings.redis_failure == "open"
    budgets = Budgets(store, key_budgets(settings), fail_open)
    app[LEDGER] = Ledger(app[METRICS].registry, budgets, app.get(HISTORY))
    yield
    await store.close()
