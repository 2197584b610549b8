"""Token budgets per key over UTC calendar days and months, and the usage store behind them.

Decisions:

- One layout for both stores: a hash per window (``usage:day:2026-12-02``,
  ``usage:month:2026-12``) whose fields are ``key<TAB>model<TAB>prompt|completion|requests``
  plus the key's total as ``key``. Redis (``REDIS_URL``) is shared by every replica and read
  by ``aichat usage``; memory serves one process (with ``--workers``, the supervisor's serves
  them all: ``aichat.operations.shared``).
- A request is admitted while what its key has spent, plus what the requests in flight hold,
  is under the budget; it then holds its worst case (its prompt and its ``max_tokens``, or
  the route's) until it ends, when the hold is released and its real usage counted
  (``hold``, ``release``; ``Budgets.admit``, ``Budgets.settle``). So requests that start
  together cannot spend the budget many times over: the last one admitted may take the key
  past it by at most its own worst case (or more, if an upstream answers past max_tokens).
  Admission is one atomic step in the store (a Lua script in Redis), shared by every
  replica. A hold left by a process that died lapses after ``HOLD_SECONDS``.
- Holds and charges are counted per subject (a field of the window hashes, the key's total
  here) in the store's own unit: another budget (money, say) is another subject.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aichat.core.config import Settings
from aichat.core.errors import APIError
from aichat.core.exchange import Exchange
from aichat.core.ids import new_id
from aichat.operations.limits import Overloaded, at_capacity
from aichat.operations.redis_pool import RedisPool, StoreBusy, StoreUnavailable
from aichat.providers.base import Usage

log = logging.getLogger("aichat.budgets")

WINDOWS = ("day", "month")
KINDS = ("prompt", "completion", "requests")
_KEEP = {"day": 35 * 86400, "month": 400 * 86400}  # seconds Redis keeps a window's hash
RETRY_WRITE = 1.0  # seconds before a failed usage write is tried again
HOLD_SECONDS = 900.0  # how long a hold lasts if the process holding it never releases it
MAX_HOLD = 10**12  # a worst case larger than any budget, and exact in Lua's numbers


@dataclass(frozen=True, slots=True)
class Hold:
    """Part of a subject's budget held by one request in flight, under ``lease``."""

    subject: str
    lease: str


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

    async def hold(
        self,
        windows: tuple[str, str],
        hold: Hold,
        amount: int,
        limits: tuple[int, int],
    ) -> tuple[bool, tuple[int, int]]:
        """Hold ``amount`` of the subject's budget if what it spent and holds is under each
        of ``limits`` (0: none), in one atomic step; whether it was held, and the spent and
        held before (day, month)."""
        ...

    def release(self, hold: Hold) -> None:
        """Give ``hold`` back (without waiting for the store)."""
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
        self._holds: dict[str, dict[str, int]] = {}  # subject -> lease -> amount

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

    async def hold(
        self,
        windows: tuple[str, str],
        hold: Hold,
        amount: int,
        limits: tuple[int, int],
    ) -> tuple[bool, tuple[int, int]]:
        """Hold ``amount`` if the subject is under its limits (no await: atomic here)."""
        holds = self._holds.setdefault(hold.subject, {})
        held = sum(holds.values())
        day, month = (
            self._hash(_name(k, w)).get(hold.subject, 0) + held
            for k, w in zip(WINDOWS, windows, strict=True)
        )
        admitted = _under((day, month), limits)
        if admitted:
            holds[hold.lease] = amount
        return admitted, (day, month)

    def release(self, hold: Hold) -> None:
        """Forget the hold."""
        holds = self._holds.get(hold.subject)
        if holds is not None:
            holds.pop(hold.lease, None)
            if not holds:
                del self._holds[hold.subject]

    async def read(self, windows: tuple[str, str]) -> tuple[dict[str, int], dict[str, int]]:
        """Copies of both windows."""
        day, month = (dict(self._hash(_name(k, w))) for k, w in zip(WINDOWS, windows, strict=True))
        return day, month

    async def close(self) -> None:
        """Nothing to close."""


def _under(used: tuple[int, int], limits: tuple[int, int]) -> bool:
    return all(not limit or spent < limit for spent, limit in zip(used, limits, strict=True))


# Admission, atomic in Redis: drop lapsed holds, add up the live ones, and hold ARGV[5] if
# the subject's totals (with this process's unwritten charges, ARGV[6..7]) and holds are
# under its limits (ARGV[8..9], 0: none). KEYS: day hash, month hash, leases (a sorted set
# by lapse time), amounts (a hash by lease).
_HOLD = """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
for _, lease in ipairs(lapsed) do redis.call('HDEL', KEYS[4], lease) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
local held = 0
for _, amount in ipairs(redis.call('HVALS', KEYS[4])) do held = held + tonumber(amount) end
local day = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') + tonumber(ARGV[6]) + held
local month = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') + tonumber(ARGV[7]) + held
local day_limit, month_limit = tonumber(ARGV[8]), tonumber(ARGV[9])
if (day_limit > 0 and day >= day_limit) or (month_limit > 0 and month >= month_limit) then
  return {0, day, month}
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[10])
redis.call('EXPIRE', KEYS[4], ARGV[10])
return {1, day, month}
"""


class RedisUsage:
    """Usage in Redis, shared by every replica using the same prefix."""

    def __init__(self, pool: RedisPool, prefix: str) -> None:
        self._pool = pool
        self._redis = pool.client
        self._prefix = prefix
        self._pending: dict[str, dict[str, int]] = {}
        self._sending: dict[str, dict[str, int]] = {}  # the batch being written
        self._released: list[Hold] = []  # sent with the next write, after its charges
        self._writer: asyncio.Task[None] | None = None
        self._warned_at = 0.0
        self._hold = self._redis.register_script(_HOLD)

    def _key(self, kind: str, window: str) -> str:
        return self._prefix + _name(kind, window)

    def charge(self, windows: tuple[str, str], increments: Mapping[str, int]) -> None:
        """Queue the increments; the writer task sends them."""
        for kind, window in zip(WINDOWS, windows, strict=True):
            counts = self._pending.setdefault(self._key(kind, window), {})
            for item, amount in increments.items():
                counts[item] = counts.get(item, 0) + amount
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    def _holds(self, subject: str) -> tuple[str, str]:
        return f"{self._prefix}holds:{subject}", f"{self._prefix}held:{subject}"

    async def hold(
        self,
        windows: tuple[str, str],
        hold: Hold,
        amount: int,
        limits: tuple[int, int],
    ) -> tuple[bool, tuple[int, int]]:
        """Hold ``amount`` with the script above, in one round trip."""
        names = [self._key(kind, window) for kind, window in zip(WINDOWS, windows, strict=True)]
        unwritten = [self._unwritten(name, hold.subject) for name in names]
        now = time.time()
        args = [hold.subject, now, now + HOLD_SECONDS, hold.lease, amount, *unwritten, *limits]
        keys = [*names, *self._holds(hold.subject)]
        admitted, day, month = await self._pool.call(
            lambda: self._hold(keys=keys, args=[*args, math.ceil(HOLD_SECONDS)])
        )
        return bool(admitted), (int(day), int(month))

    def release(self, hold: Hold) -> None:
        """Queue the release; the writer sends it after the charges queued before it."""
        self._released.append(hold)
        self._start_writer()

    async def _write(self) -> None:
        while self._pending or self._released:
            batch, self._pending = self._pending, {}
            released, self._released = self._released, []
            self._sending = batch
            try:
                await self._send(batch, released)
            except (StoreUnavailable, StoreBusy) as exc:
                self._sending = {}
                self._merge_back(batch)
                self._released[:0] = released
                self._warn(f"usage not written yet ({exc}); retrying")
                await asyncio.sleep(RETRY_WRITE)
            self._sending = {}

    def _unwritten(self, name: str, item: str) -> int:
        """What this process counted of ``item`` and Redis may not hold yet (a batch in
        flight is counted, though it may have landed: over, never under)."""
        return self._pending.get(name, {}).get(item, 0) + self._sending.get(name, {}).get(item, 0)

    async def _send(self, batch: dict[str, dict[str, int]], released: list[Hold]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for name, counts in batch.items():
            for item, amount in counts.items():
                pipe.hincrby(name, item, amount)
            pipe.expire(name, _KEEP["day" if ":day:" in name else "month"])
        for hold in released:  # after the charges: an answer is never counted by neither
            leases, amounts = self._holds(hold.subject)
            pipe.zrem(leases, hold.lease)
            pipe.hdel(amounts, hold.lease)
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
            int(value or 0) + self._unwritten(name, key)
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

    def release(self, hold: Hold | None) -> None:
        """Give back what a request held (after its usage was charged, or when it failed)."""
        if hold is not None:
            self.store.release(hold)

    def _current_windows(self, now: float) -> tuple[str, str]:
        if now >= self._windows_end:
            self._windows = window_ids(now)
            self._windows_end = window_resets(now)[0].timestamp()
        return self._windows

    async def admit(self, exchange: Exchange, worst: int) -> Hold | None:
        """Hold ``worst`` tokens of the request's key's budget, or raise ``QuotaExceeded``
        when what it spent and holds has reached a budget; set its headers. None when the key
        has no budget (or the store is down and failing open)."""
        name = exchange.key.name
        limits = self.limits.get(name)
        if limits is None:
            return None
        now = time.time()
        hold = Hold(name, new_id(hex_digits=16))
        try:
            admitted, spent = await self.store.hold(
                self._current_windows(now), hold, min(worst, MAX_HOLD), limits
            )
        except StoreUnavailable as exc:
            self._store_down(str(exc))
            return None
        except StoreBusy:
            raise at_capacity() from None
        headers = _headers(limits, spent, now)
        exchange.headers.update(headers)
        if admitted:
            return hold
        window, limit, reset = next(
            (window, limit, reset)
            for window, limit, used, reset in zip(
                WINDOWS, limits, spent, window_resets(now), strict=True
            )
            if limit and used >= limit
        )
        raise QuotaExceeded(
            f"You exceeded your token budget: {limit} tokens per {window} for this key; it "
            f"resets at {headers[f'x-aichat-budget-reset-{window}']}.",
            headers={**headers, "Retry-After": str(max(1, math.ceil(reset.timestamp() - now)))},
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
