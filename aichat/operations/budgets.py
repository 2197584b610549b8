"""Token budgets per key over UTC calendar days and months, and the usage store behind them.

Decisions:

- One layout for both stores: a hash per window (``usage:day:2026-12-02``,
  ``usage:month:2026-12``) whose fields are ``key<TAB>model<TAB>prompt|completion|requests``
  plus the key's total as ``key``. Redis (``REDIS_URL``) is shared by every replica and read
  by ``aichat usage``; memory serves one process.
- A budget is checked when a request starts, never during its answer: a request that starts
  under its budget finishes, and all of its tokens count. Requests that start together while
  a key is just under its budget may overshoot it by their own size.
- Usage goes to Redis from one writer task per process: charges wait in a small table
  (bounded by keys x models) while a write is in flight, so a burst becomes one pipeline and
  a request never waits for Redis to record what it used. Keys without a budget are never
  read.
- A write that does not reach Redis is kept and retried whole. One that Redis refuses in
  part (an increment past 2^63 on a stored count, a key of the wrong type) is never retried:
  Redis has applied the rest of it, and a retry would apply the rest again every second,
  for ever. The refused increments are dropped and logged.
- Redis is reached through the process's one bounded pool (``aichat.operations.redis_pool``),
  shared with the rate limits: a burst beyond it waits for a connection, then gets 503; a
  busy pool never lets a request past its budget, nor refuses it as if Redis were down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Protocol

from aichat.core.config import Settings
from aichat.core.errors import APIError
from aichat.core.exchange import Exchange
from aichat.operations.limits import Overloaded, at_capacity
from aichat.operations.redis_pool import RedisPool, StoreBusy, StoreUnavailable
from aichat.providers.base import Usage

log = logging.getLogger("aichat.budgets")

WINDOWS = ("day", "month")
KINDS = ("prompt", "completion", "requests")
_KEEP = {"day": 35 * 86400, "month": 400 * 86400}  # seconds Redis keeps a window's hash
RETRY_WRITE = 1.0  # seconds before a failed usage write is tried again


class QuotaExceeded(APIError):
    """A key has used its token budget (429, as OpenAI answers an exhausted quota)."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


def window_ids(now: float) -> tuple[str, str]:
    """The UTC day and month ``now`` falls in: ``("2026-12-02", "2026-12")``."""
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    return day, day[:7]


def window_resets(now: float) -> tuple[datetime, datetime]:
    """When the current UTC day and month end."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow = datetime.fromtimestamp(today.timestamp() + 86400, UTC)
    month = today.replace(day=1)
    next_month = month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)
    return tomorrow, next_month


def field(key: str, model: str, kind: str) -> str:
    """A usage hash's field for ``key``'s ``kind`` count on ``model``."""
    return f"{key}\t{model}\t{kind}"


def charges(key: str, model: str, usage: Usage) -> dict[str, int]:
    """The increments one answer makes to each window's hash."""
    tokens = usage.prompt_tokens + usage.completion_tokens
    return {
        field(key, model, "prompt"): usage.prompt_tokens,
        field(key, model, "completion"): usage.completion_tokens,
        field(key, model, "requests"): 1,
        key: tokens,
    }


class UsageStore(Protocol):
    """Where token usage is counted, per window hash."""

    def charge(self, windows: tuple[str, str], increments: Mapping[str, int]) -> None:
        """Add ``increments`` to both windows' hashes (without waiting for the store)."""
        ...

    async def spent(self, windows: tuple[str, str], key: str) -> tuple[int, int]:
        """Tokens ``key`` used in the day and month windows."""
        ...

    async def read(self, windows: tuple[str, str]) -> tuple[dict[str, int], dict[str, int]]:
        """Both windows' whole hashes (for ``aichat usage``)."""
        ...

    async def close(self) -> None:
        """Write what is pending."""
        ...


def _name(kind: str, window: str) -> str:
    return f"usage:{kind}:{window}"


class MemoryUsage:
    """Usage of this process only; windows other than the current ones are dropped."""

    def __init__(self) -> None:
        self._hashes: dict[str, dict[str, int]] = {}

    def _hash(self, name: str) -> dict[str, int]:
        return self._hashes.get(name, {})

    def charge(self, windows: tuple[str, str], increments: Mapping[str, int]) -> None:
        """Add to both windows."""
        names = [_name(kind, window) for kind, window in zip(WINDOWS, windows, strict=True)]
        if names[0] not in self._hashes:  # a new day: drop windows that have ended
            for stale in set(self._hashes) - set(names):
                del self._hashes[stale]
        for name in names:
            counts = self._hashes.setdefault(name, {})
            for item, amount in increments.items():
                counts[item] = counts.get(item, 0) + amount

    async def spent(self, windows: tuple[str, str], key: str) -> tuple[int, int]:
        """The key's totals."""
        day, month = (
            self._hash(_name(k, w)).get(key, 0) for k, w in zip(WINDOWS, windows, strict=True)
        )
        return day, month

    async def read(self, windows: tuple[str, str]) -> tuple[dict[str, int], dict[str, int]]:
        """Copies of both windows."""
        day, month = (dict(self._hash(_name(k, w))) for k, w in zip(WINDOWS, windows, strict=True))
        return day, month

    async def close(self) -> None:
        """Nothing to close."""


class RedisUsage:
    """Usage in Redis, shared by every replica using the same prefix."""

    def __init__(self, pool: RedisPool, prefix: str) -> None:
        self._pool = pool
        self._redis = pool.client
        self._prefix = prefix
        self._pending: dict[str, dict[str, int]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._warned_at = 0.0

    def _key(self, kind: str, window: str) -> str:
        return self._prefix + _name(kind, window)

    def charge(self, windows: tuple[str, str], increments: Mapping[str, int]) -> None:
        """Queue the increments; the writer task sends them."""
        for kind, window in zip(WINDOWS, windows, strict=True):
            counts = self._pending.setdefault(self._key(kind, window), {})
            for item, amount in increments.items():
                counts[item] = counts.get(item, 0) + amount
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                await self._send(batch)
            except (StoreUnavailable, StoreBusy) as exc:
                self._merge_back(batch)
                self._warn(f"usage not written yet ({exc}); retrying")
                await asyncio.sleep(RETRY_WRITE)

    async def _send(self, batch: dict[str, dict[str, int]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for name, counts in batch.items():
            for item, amount in counts.items():
                pipe.hincrby(name, item, amount)
            pipe.expire(name, _KEEP["day" if ":day:" in name else "month"])
        # Each command's answer, a refusal included: only a batch that never reached Redis
        # raises (and is retried).
        answers = await self._pool.call(lambda: pipe.execute(raise_on_error=False))
        refused = [answer for answer in answers if isinstance(answer, Exception)]
        if refused:
            self._warn(f"{len(refused)} usage increments refused by Redis, dropped: {refused[0]}")

    def _merge_back(self, batch: dict[str, dict[str, int]]) -> None:
        for name, counts in batch.items():
            pending = self._pending.setdefault(name, {})
            for item, amount in counts.items():
                pending[item] = pending.get(item, 0) + amount

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at > 10:  # at most every 10 s: Redis may be down for long
            self._warned_at = now
            log.warning(message)

    async def spent(self, windows: tuple[str, str], key: str) -> tuple[int, int]:
        """The key's totals in Redis, plus what this process has not written yet."""
        names = [self._key(kind, window) for kind, window in zip(WINDOWS, windows, strict=True)]
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(name, key)
        stored = await self._pool.call(pipe.execute)
        day, month = (
            int(value or 0) + self._pending.get(name, {}).get(key, 0)
            for name, value in zip(names, stored, strict=True)
        )
        return day, month

    async def read(self, windows: tuple[str, str]) -> tuple[dict[str, int], dict[str, int]]:
        """Both windows' hashes as Redis holds them."""
        pipe = self._redis.pipeline(transaction=False)
        for kind, window in zip(WINDOWS, windows, strict=True):
            pipe.hgetall(self._key(kind, window))
        day, month = (
            {item.decode(): int(value) for item, value in stored.items()}
            for stored in await self._pool.call(pipe.execute)
        )
        return day, month

    async def close(self) -> None:
        """Write what is pending (briefly: Redis may be down); the pool is closed by its owner."""
        if self._writer is not None:
            try:
                async with asyncio.timeout(2):
                    await self._writer
            except TimeoutError:
                log.warning("usage not written to Redis before shutdown: %s", self._pending)


def budget_limits(settings: Settings) -> dict[str, tuple[int, int]]:
    """Each budgeted key's (tokens per day, tokens per month); 0 means no limit."""
    return {
        key.name: (key.tokens_per_day or 0, key.tokens_per_month or 0)
        for key in settings.keys
        if key.tokens_per_day or key.tokens_per_month
    }


def _headers(limits: tuple[int, int], spent: tuple[int, int], now: float) -> dict[str, str]:
    headers: dict[str, str] = {}
    for window, limit, used, reset in zip(WINDOWS, limits, spent, window_resets(now), strict=True):
        if limit:
            headers[f"x-aichat-budget-limit-tokens-{window}"] = str(limit)
            headers[f"x-aichat-budget-remaining-tokens-{window}"] = str(max(0, limit - used))
            headers[f"x-aichat-budget-reset-{window}"] = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
    return headers


class Budgets:
    """Token budgets of the configured keys, counted in ``store``."""

    def __init__(
        self,
        store: UsageStore,
        limits: dict[str, tuple[int, int]],
        fail_open: bool,
        every_key: bool = False,
    ) -> None:
        self.store = store
        self.limits = limits  # replaced whole on reload
        self._fail_open = fail_open
        # Memory serves budgets only (no other process can read it): keys without one are not
        # written there. Redis is also read by ``aichat usage``: every key is.
        self._every_key = every_key
        self._warned_at = 0.0
        self._windows = ("", "")
        self._windows_end = 0.0  # the windows change at midnight UTC, not on every request

    def charge(self, key: str, model: str, usage: Usage) -> None:
        """Count one answer of ``key`` on ``model``."""
        if self._every_key or key in self.limits:
            self.store.charge(self._current_windows(time.time()), charges(key, model, usage))

    def _current_windows(self, now: float) -> tuple[str, str]:
        if now >= self._windows_end:
            self._windows = window_ids(now)
            self._windows_end = window_resets(now)[0].timestamp()
        return self._windows

    async def admit(self, exchange: Exchange) -> None:
        """Raise ``QuotaExceeded`` if the request's key has used a budget; set its headers."""
        name = exchange.key.name
        limits = self.limits.get(name)
        if limits is None:
            return
        now = time.time()
        try:
            spent = await self.store.spent(self._current_windows(now), name)
        except StoreUnavailable as exc:
            self._store_down(str(exc))
            return
        except StoreBusy:
            raise at_capacity() from None
        headers = _headers(limits, spent, now)
        exchange.headers.update(headers)
        for window, limit, used, reset in zip(
            WINDOWS, limits, spent, window_resets(now), strict=True
        ):
            if limit and used >= limit:
                wait = max(1, math.ceil(reset.timestamp() - now))
                raise QuotaExceeded(
                    f"You exceeded your token budget: {limit} tokens per {window} for this "
                    f"key; it resets at {headers[f'x-aichat-budget-reset-{window}']}.",
                    headers={**headers, "Retry-After": str(wait)},
                )

    def _store_down(self, why: str) -> None:
        if not self._fail_open:
            raise Overloaded(
                "Usage store unavailable; try again shortly.",
                code="usage_store_unavailable",
                headers={"Retry-After": "1"},
            )
        now = time.monotonic()
        if now - self._warned_at > 10:
            self._warned_at = now
            log.warning("usage store unavailable (%s): allowing requests", why)


def open_store(settings: Settings, pool: RedisPool | None) -> UsageStore:
    """Redis when the process has a pool (``REDIS_URL`` is set), else this process's memory."""
    if pool is not None:
        return RedisUsage(pool, settings.redis_prefix)
    return MemoryUsage()


def rows(day: dict[str, int], month: dict[str, int]) -> Iterator[tuple[str, str, list[int]]]:
    """(key, model, [today's prompt, completion, requests, this month's ...]) per pair, sorted."""
    table: dict[tuple[str, str], list[int]] = {}
    for offset, counts in ((0, day), (3, month)):
        for item, value in counts.items():
            parts = item.split("\t")
            if len(parts) < 3:
                continue  # a key's total
            key, kind = parts[0], parts[-1]
            model = "\t".join(parts[1:-1])
            if kind in KINDS:
                table.setdefault((key, model), [0] * 6)[offset + KINDS.index(kind)] += value
    for (key, model), sums in sorted(table.items()):
        yield key, model, sums
