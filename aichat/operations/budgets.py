"""Budgets per key, in tokens and in US dollars, over UTC calendar days and months.

Decisions:

- A key's budget is counted per subject: its tokens (prompt and completion) under its name,
  its spend in nano-dollars under ``name:usd`` (key names hold no colon). Money is counted
  in the integer nano-dollars ``aichat.operations.pricing`` prices answers in and the usage
  history adds up: a budget's count and the history agree to the nano-dollar, and nothing
  drifts as floats would. A money budget is at most a million dollars (``KeyConfig``), so
  its counts stay exact in the doubles Redis's Lua computes with.
- One layout for both stores: a hash per window (``usage:day:2026-12-02``,
  ``usage:month:2026-12``) whose fields are the subjects' totals. Only budgeted keys, and
  only the units they have budgets in, are written: who used what is the usage history's
  (``aichat.operations.history``). Redis (``REDIS_URL``) is shared by every replica; memory
  serves one process (with ``--workers``, the supervisor's serves them all:
  ``aichat.operations.shared``).
- A request is admitted while what its key has spent, plus what the requests in flight hold,
  is under each of its budgets; it then holds its worst case until it ends, when the hold is
  released and its real usage counted (``Budgets.admit``, ``Budgets.charge``,
  ``Budgets.release``). In tokens the worst case is its prompt and its ``max_tokens`` (or
  the route's); in money, that usage at the dearest prices of its route and fallbacks, the
  whole prompt priced at the dearest of input, cache-read and cache-write rates. So requests
  that start together cannot spend a budget many times over: the last one admitted may take
  the key past it by at most its own worst case (or more, if an upstream answers past
  max_tokens). Admission is one atomic step in the store (a Lua script in Redis), shared by
  every replica. A hold left by a process that died lapses after ``HOLD_SECONDS``.
- A model without a known price (``pricing.Unpriced``) is refused to a key with a money
  budget (403 ``model_not_priced``), naming the route to price: counting it as free would
  let the budget be spent past without a trace, on exactly the models (new, or behind an
  unrecognised proxy) an operator has not looked at. Local and free routes say so with
  ``price = { input = 0, output = 0 }`` (aichats and mock routes are free already).
- Usage goes to Redis from one writer task per process: charges wait in a small table
  (bounded by budgeted keys) while a write is in flight, so a burst becomes one pipeline and
  a request never waits for Redis to record what it used.
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from aichat.core.config import Settings
from aichat.core.errors import APIError
from aichat.core.exchange import Exchange
from aichat.core.ids import new_id
from aichat.operations.limits import Overloaded, at_capacity
from aichat.operations.pricing import nano_usd, usd
from aichat.operations.redis_pool import RedisPool, StoreBusy, StoreUnavailable
from aichat.providers.base import Usage

log = logging.getLogger("aichat.budgets")

WINDOWS = ("day", "month")
Unit = Literal["tokens", "usd"]
_KEEP = {"day": 35 * 86400, "month": 400 * 86400}  # seconds Redis keeps a window's hash
RETRY_WRITE = 1.0  # seconds before a failed usage write is tried again
HOLD_SECONDS = 900.0  # how long a hold lasts if the process holding it never releases it
# A worst case at least as large as any money budget in nano-dollars (and than any token
# budget in use), and exact in Lua's numbers.
MAX_HOLD = 10**15


@dataclass(frozen=True, slots=True)
class Hold:
    """Part of a subject's budget held by one request in flight, under ``lease``."""

    subject: str
    lease: str


@dataclass(frozen=True, slots=True)
class Budget:
    """One of a key's budgets: its limits per day and per month (0: none), in tokens or,
    for ``usd``, in nano-dollars."""

    unit: Unit
    limits: tuple[int, int]


class QuotaExceeded(APIError):
    """A key has used a budget (429, as OpenAI answers an exhausted quota)."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class PriceUnknown(APIError):
    """A key with a money budget asked for a model whose price is not known (403)."""

    status = 403
    type = "invalid_request_error"
    code = "model_not_priced"


def subject(key: str, unit: Unit) -> str:
    """Where ``key``'s use in ``unit`` is counted: its name for tokens, ``name:usd`` for money."""
    return key if unit == "tokens" else f"{key}:{unit}"


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


class UsageStore(Protocol):
    """Where budgets' use is counted, per window hash."""

    def charge(self, windows: tuple[str, str], increments: Mapping[str, int]) -> None:
        """Add ``increments`` to both windows' hashes (without waiting for the store)."""
        ...

    async def spent(self, windows: tuple[str, str], item: str) -> tuple[int, int]:
        """What ``item`` (a subject) counts in the day and month windows."""
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

    async def spent(self, windows: tuple[str, str], item: str) -> tuple[int, int]:
        """The subject's totals."""
        day, month = (
            self._hash(_name(k, w)).get(item, 0) for k, w in zip(WINDOWS, windows, strict=True)
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

    async def close(self) -> None:
        """Nothing to close."""


def _under(used: tuple[int, int], limits: tuple[int, int]) -> bool:
    return all(not limit or spent < limit for spent, limit in zip(used, limits, strict=True))


# Admission, atomic in Redis: drop lapsed holds, add up the live ones, and hold ARGV[5] if
# the subject's totals (with this process's unwritten charges, ARGV[6..7]) and holds are
# under its limits (ARGV[8..9], 0: none). KEYS: day hash, month hash, leases (a sorted set
# by lapse time), amounts (a hash by lease). Run twice for one lease (a retry after a
# timeout), it holds once and answers as the first run did.
_HOLD = """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
for _, lease in ipairs(lapsed) do redis.call('HDEL', KEYS[4], lease) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
local held = 0
for _, amount in ipairs(redis.call('HVALS', KEYS[4])) do held = held + tonumber(amount) end
local day = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') + tonumber(ARGV[6]) + held
local month = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') + tonumber(ARGV[7]) + held
if redis.call('ZSCORE', KEYS[3], ARGV[4]) then  -- held by a try whose answer came too late
  return {1, day - tonumber(ARGV[5]), month - tonumber(ARGV[5])}
end
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
            lambda: self._hold(keys=keys, args=[*args, math.ceil(HOLD_SECONDS)]), idempotent=True
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
            # Told by the name's start, not by ":day:" anywhere in it: a prefix may hold that.
            pipe.expire(name, _KEEP["day" if name.startswith(self._key("day", "")) else "month"])
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

    async def spent(self, windows: tuple[str, str], item: str) -> tuple[int, int]:
        """The subject's totals in Redis, plus what this process has not written yet."""
        names = [self._key(kind, window) for kind, window in zip(WINDOWS, windows, strict=True)]
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(name, item)
        stored = await self._pool.call(pipe.execute)
        day, month = (
            int(value or 0) + self._unwritten(name, item)
            for name, value in zip(names, stored, strict=True)
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


def key_budgets(settings: Settings) -> dict[str, tuple[Budget, ...]]:
    """Each budgeted key's budgets (tokens first, then money)."""
    found: dict[str, tuple[Budget, ...]] = {}
    for key in settings.keys:
        budgets = []
        if key.tokens_per_day or key.tokens_per_month:
            budgets.append(Budget("tokens", (key.tokens_per_day or 0, key.tokens_per_month or 0)))
        if key.usd_per_day or key.usd_per_month:
            day, month = (nano_usd(d) if d else 0 for d in (key.usd_per_day, key.usd_per_month))
            budgets.append(Budget("usd", (day, month)))
        if budgets:
            found[key.name] = tuple(budgets)
    return found


def _amount(unit: Unit, count: int) -> str:
    """A count in ``unit`` as headers and messages show it: tokens, or plain dollars."""
    return usd(count) if unit == "usd" else str(count)


def _headers(
    budget: Budget, spent: tuple[int, int], resets: tuple[datetime, datetime]
) -> dict[str, str]:
    headers: dict[str, str] = {}
    unit = budget.unit
    for window, limit, used, reset in zip(WINDOWS, budget.limits, spent, resets, strict=True):
        if limit:
            headers[f"x-aichat-budget-limit-{unit}-{window}"] = _amount(unit, limit)
            headers[f"x-aichat-budget-remaining-{unit}-{window}"] = _amount(
                unit, max(0, limit - used)
            )
            headers[f"x-aichat-budget-reset-{window}"] = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
    return headers


_WHAT = {"tokens": "token budget", "usd": "money budget"}
_UNIT_NAMES = {"tokens": "tokens", "usd": "US dollars"}


def _exceeded(
    refused: list[tuple[Budget, tuple[int, int]]],
    headers: dict[str, str],
    resets: tuple[datetime, datetime],
    now: float,
) -> QuotaExceeded:
    """The 429 for budgets used up, naming the one that frees last (a spent month outlasts a
    spent day)."""
    reset, budget, window, limit = max(
        (
            (reset, budget, window, limit)
            for budget, spent in refused
            for window, limit, used, reset in zip(
                WINDOWS, budget.limits, spent, resets, strict=True
            )
            if limit and used >= limit
        ),
        key=lambda found: found[0],
    )
    return QuotaExceeded(
        f"You exceeded your {_WHAT[budget.unit]}: {_amount(budget.unit, limit)} "
        f"{_UNIT_NAMES[budget.unit]} per {window} for this key; it resets at "
        f"{headers[f'x-aichat-budget-reset-{window}']}.",
        headers={**headers, "Retry-After": str(max(1, math.ceil(reset.timestamp() - now)))},
    )


class Budgets:
    """The budgets of the configured keys, counted in ``store``."""

    def __init__(
        self, store: UsageStore, by_key: dict[str, tuple[Budget, ...]], fail_open: bool
    ) -> None:
        self.store = store
        self.by_key = by_key  # replaced whole on reload
        self._fail_open = fail_open
        self._warned_at = 0.0
        self._windows = ("", "")
        self._windows_end = 0.0  # the windows change at midnight UTC, not on every request

    def charge(self, key: str, usage: Usage, cost_nano_usd: int) -> None:
        """Count one answer of ``key`` against its budgets."""
        budgets = self.by_key.get(key)
        if budgets is None:
            return
        used = {"tokens": usage.prompt_tokens + usage.completion_tokens, "usd": cost_nano_usd}
        increments = {subject(key, budget.unit): used[budget.unit] for budget in budgets}
        self.store.charge(self._current_windows(time.time()), increments)

    def release(self, holds: Iterable[Hold]) -> None:
        """Give back what a request held (after its usage was charged, or when it failed)."""
        for hold in holds:
            self.store.release(hold)

    def _current_windows(self, now: float) -> tuple[str, str]:
        if now >= self._windows_end:
            self._windows = window_ids(now)
            self._windows_end = window_resets(now)[0].timestamp()
        return self._windows

    async def admit(self, exchange: Exchange, worst: Mapping[Unit, int]) -> tuple[Hold, ...]:
        """Hold ``worst`` (per unit) of each of the request's key's budgets, or raise
        ``QuotaExceeded`` when what it spent and holds has reached one; set its headers.
        Nothing held when the key has no budget (or the store is down and failing open)."""
        name = exchange.key.name
        budgets = self.by_key.get(name, ())
        now = time.time()
        windows, resets = self._current_windows(now), window_resets(now)
        held: list[Hold] = []
        refused: list[tuple[Budget, tuple[int, int]]] = []
        headers: dict[str, str] = {}
        try:
            for budget in budgets:  # each, even past a refusal: every budget's headers are told
                hold = Hold(subject(name, budget.unit), new_id(hex_digits=16))
                admitted, spent = await self.store.hold(
                    windows, hold, min(worst[budget.unit], MAX_HOLD), budget.limits
                )
                if admitted:
                    held.append(hold)
                else:
                    refused.append((budget, spent))
                headers.update(_headers(budget, spent, resets))
        except BaseException as exc:
            self.release(held)
            if isinstance(exc, StoreUnavailable):
                self._store_down(str(exc))
                return ()
            if isinstance(exc, StoreBusy):
                raise at_capacity() from None
            raise
        exchange.headers.update(headers)
        if refused:
            self.release(held)
            raise _exceeded(refused, headers, resets, now)
        return tuple(held)

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
