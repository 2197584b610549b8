"""Per-key request rates and concurrency, and a global cap on in-flight upstream requests.

Counters live in memory (one process; with ``--workers``, the supervisor's, see
``aichat.operations.shared``) or in Redis (``REDIS_URL``), where every replica behind one
port shares them. Rates use fixed one-minute windows; concurrency uses leases
that expire after ``LEASE`` seconds unless renewed, so a replica that dies holding some
blocks a key for seconds, not for ever. A ``Limiter`` renews the leases its requests hold
and retries releases that failed, so a lost release costs seconds too.

Redis is reached through the process's one bounded pool (``aichat.operations.redis_pool``):
a burst beyond it waits for a connection, then gets 503 like any overload; only a Redis
that does not answer is "unavailable", which ``AICHAT_REDIS_FAILURE`` decides about.
Counting is exact either way: no request is let through uncounted because the pool was busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

from aiohttp import hdrs, web

from aichat.core.errors import APIError, InvalidRequest
from aichat.core.exchange import EXCHANGE, Handler, KeyPolicy
from aichat.core.ids import new_id
from aichat.operations.loop_lag import LOOP_LAG
from aichat.operations.redis_pool import RedisPool, StoreBusy, StoreUnavailable, acquire_within

log = logging.getLogger("aichat.limits")

WINDOW = 60.0  # seconds: limits are per minute
LEASE = 30.0  # seconds a concurrency slot is held at most if its holder stops renewing it
RENEW_EVERY = LEASE / 3  # a missed renewal or two still leaves the lease alive


class RateLimited(APIError):
    """A key is over one of its limits (429, as OpenAI answers)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class Overloaded(APIError):
    """The gateway as a whole is at capacity, or cannot count (503)."""

    status = 503
    type = "server_error"
    code = "server_overloaded"


def at_capacity() -> Overloaded:
    """The 503 of a gateway that cannot take one more request now."""
    return Overloaded(
        "The gateway is at capacity; try again shortly.", headers={"Retry-After": "1"}
    )


@dataclass(frozen=True, slots=True)
class WindowCount:
    """Requests counted in the current window, and seconds until it resets."""

    count: int
    reset: float


class CounterStore(Protocol):
    """Where rate and concurrency counters live."""

    async def count_request(self, key: str) -> WindowCount:
        """Count one request for ``key`` in the current window."""
        ...

    async def acquire(self, key: str, limit: int, lease: str) -> bool:
        """Take one of ``limit`` concurrency slots of ``key``; False when all are taken."""
        ...

    async def release(self, key: str, lease: str) -> None:
        """Give a slot back."""
        ...

    async def renew(self, leases: dict[str, str]) -> None:
        """Extend the still-held ``leases`` (lease -> key) by ``LEASE`` seconds from now."""
        ...


def _window(now: float) -> tuple[int, float]:
    index = int(now // WINDOW)
    return index, (index + 1) * WINDOW - now


class MemoryStore:
    """Counters of this process only."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}
        self._slots: dict[str, set[str]] = {}

    async def count_request(self, key: str) -> WindowCount:
        """Count one request for ``key`` in the current window."""
        index, reset = _window(time.time())
        current, count = self._windows.get(key, (index, 0))
        count = count + 1 if current == index else 1
        self._windows[key] = (index, count)
        return WindowCount(count, reset)

    async def acquire(self, key: str, limit: int, lease: str) -> bool:
        """Take a slot if fewer than ``limit`` are held."""
        held = self._slots.setdefault(key, set())
        if len(held) >= limit:
            return False
        held.add(lease)
        return True

    async def release(self, key: str, lease: str) -> None:
        """Give a slot back."""
        self._slots.get(key, set()).discard(lease)

    async def renew(self, leases: dict[str, str]) -> None:
        """Nothing to do: leases in this process end only when released."""


# Drop expired leases, then take a slot if one is free; one round trip, atomic in Redis.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


class RedisStore:
    """Counters in Redis, shared by every replica using the same prefix."""

    def __init__(self, pool: RedisPool, prefix: str) -> None:
        self._pool = pool
        self._redis = pool.client
        self._prefix = prefix
        self._acquire = self._redis.register_script(_ACQUIRE)

    async def count_request(self, key: str) -> WindowCount:
        """INCR the window's counter and set its expiry in one transaction."""
        index, reset = _window(time.time())
        name = f"{self._prefix}rpm:{key}:{index}"
        pipe = self._redis.pipeline(transaction=True)
        pipe.incr(name)
        pipe.expire(name, int(WINDOW) + 5)
        count, _ = await self._pool.call(pipe.execute)
        return WindowCount(int(count), reset)

    async def acquire(self, key: str, limit: int, lease: str) -> bool:
        """Take a slot with the Lua script above."""
        now = time.time()
        args: list[str | float] = [now, now + LEASE, limit, lease, int(LEASE * 2)]
        keys = [f"{self._prefix}conc:{key}"]
        taken = await self._pool.call(lambda: self._acquire(keys=keys, args=args))
        return bool(taken)

    async def release(self, key: str, lease: str) -> None:
        """Remove the lease."""
        await self._pool.call(lambda: self._redis.zrem(f"{self._prefix}conc:{key}", lease))

    async def renew(self, leases: dict[str, str]) -> None:
        """Move the leases' expiry on, in one round trip; expired ones stay gone (``XX``)."""
        until = time.time() + LEASE
        pipe = self._redis.pipeline(transaction=False)
        for lease, key in leases.items():
            name = f"{self._prefix}conc:{key}"
            pipe.zadd(name, {lease: until}, xx=True)
            pipe.expire(name, int(LEASE * 2))
        await self._pool.call(pipe.execute)


def _reset_text(seconds: float) -> str:
    # OpenAI writes durations like "1s", "6m0s".
    whole = max(1, math.ceil(seconds))
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


class Limiter:
    """Applies key policies and the global cap, counting in ``store``."""

    def __init__(
        self,
        store: CounterStore,
        max_concurrent: int,
        queue_timeout: float,
        fail_open: bool,
        body_timeout: float = 30.0,
    ) -> None:
        self.store = store
        self.body_timeout = body_timeout
        self._global = asyncio.Semaphore(max_concurrent)
        self._queue_timeout = queue_timeout
        self._fail_open = fail_open
        self._warned_at = 0.0
        self._rejections: dict[str, int] = {}
        self._held: dict[str, str] = {}  # lease -> key, renewed while held
        self._unreleased: dict[str, tuple[str, float]] = {}  # lease -> (key, expires at)
        self._keeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start renewing held leases and retrying failed releases, every ``RENEW_EVERY``."""
        self._keeper = asyncio.create_task(self._keep_leases())

    async def stop(self) -> None:
        """Stop the renewals."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            await self.keep_leases()

    async def keep_leases(self) -> None:
        """Renew the held leases once and retry the releases that failed."""
        with contextlib.suppress(StoreUnavailable, StoreBusy):
            if self._held:
                await self.store.renew(dict(self._held))
        now = time.monotonic()
        for lease, (key, expires) in list(self._unreleased.items()):
            if expires < now:  # gone by itself meanwhile
                del self._unreleased[lease]
                continue
            with contextlib.suppress(StoreUnavailable, StoreBusy):
                await self.store.release(key, lease)
                del self._unreleased[lease]

    def rejection_counts(self) -> dict[str, int]:
        """Requests refused so far, by limit (for metrics)."""
        return dict(self._rejections)

    def _store_down(self, why: str) -> None:
        """Fail open (with a warning, at most every 10 s) or closed, as configured."""
        if not self._fail_open:
            raise Overloaded(
                "Rate-limit store unavailable; try again shortly.",
                code="rate_limit_store_unavailable",
                headers={"Retry-After": "1"},
            )
        now = time.monotonic()
        if now - self._warned_at > 10:
            self._warned_at = now
            log.warning("rate-limit store unavailable (%s): allowing requests", why)

    def _reject(self, reason: str, error: APIError) -> APIError:
        self._rejections[reason] = self._rejections.get(reason, 0) + 1
        return error

    def refuse(self, limit: str) -> APIError:
        """The 503 of a request the gateway has no capacity for, counted under ``limit``."""
        return self._reject(limit, at_capacity())

    def _busy(self) -> APIError:
        return self.refuse("store_busy")

    async def check_rate(self, policy: KeyPolicy) -> dict[str, str]:
        """Count this request; raise 429 past the key's limit; return the rate headers."""
        limit = policy.requests_per_minute
        if not limit:
            return {}
        try:
            window = await self.store.count_request(policy.name)
        except StoreUnavailable as exc:
            self._store_down(str(exc))
            return {}
        except StoreBusy:
            raise self._busy() from None
        headers = {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(max(0, limit - window.count)),
            "x-ratelimit-reset-requests": _reset_text(window.reset),
        }
        if window.count > limit:
            retry = {"Retry-After": str(max(1, math.ceil(window.reset)))}
            raise self._reject(
                "requests_per_minute",
                RateLimited(
                    f"Rate limit reached: {limit} requests per minute for this key.",
                    headers={**headers, **retry},
                ),
            )
        return headers

    def slot(self, policy: KeyPolicy) -> Slot:
        """``async with``: hold one of the key's concurrency slots and one of the global ones."""
        return Slot(self, policy)

    async def acquire(self, policy: KeyPolicy) -> str | None:
        """Take the slots ``slot`` holds; the key slot's lease, if one was taken."""
        lease = await self._take_key_slot(policy)
        try:
            await self._take_global_slot()
        except BaseException:
            if lease is not None:
                await self._give_back(policy, lease)
            raise
        return lease

    async def release(self, policy: KeyPolicy, lease: str | None) -> None:
        """Give back what ``acquire`` took."""
        self._global.release()
        if lease is not None:
            await self._give_back(policy, lease)

    async def _take_global_slot(self) -> None:
        if not await acquire_within(self._global, self._queue_timeout):
            raise self.refuse("global")

    async def _take_key_slot(self, policy: KeyPolicy) -> str | None:
        """The lease of the slot taken, or None when none is held (unlimited, store down)."""
        if not policy.max_concurrent:
            return None  # no lease id drawn: most keys never need one
        lease = new_id(hex_digits=16)
        try:
            taken = await self.store.acquire(policy.name, policy.max_concurrent, lease)
        except StoreUnavailable as exc:
            self._store_down(str(exc))
            return None
        except StoreBusy:
            raise self._busy() from None
        if not taken:
            raise self._reject(
                "concurrency",
                RateLimited(
                    f"Too many concurrent requests: {policy.max_concurrent} at a time "
                    "for this key.",
                    headers={"Retry-After": "1"},
                ),
            )
        self._held[lease] = policy.name
        return lease

    async def _give_back(self, policy: KeyPolicy, lease: str) -> None:
        del self._held[lease]
        try:
            await asyncio.shield(self.store.release(policy.name, lease))
        except (StoreUnavailable, StoreBusy):
            # Retried with the next renewals; until then the lease runs out by itself.
            self._unreleased[lease] = (policy.name, time.monotonic() + LEASE)


class Slot:
    """The slots one request holds while its upstream work is in flight."""

    __slots__ = ("_lease", "_limiter", "_policy")

    def __init__(self, limiter: Limiter, policy: KeyPolicy) -> None:
        self._limiter = limiter
        self._policy = policy
        self._lease: str | None = None

    async def __aenter__(self) -> None:
        self._lease = await self._limiter.acquire(self._policy)

    async def __aexit__(self, *exc_info: object) -> None:
        await self._limiter.release(self._policy, self._lease)


LIMITER = web.AppKey("limiter", Limiter)


def _check_body_head(request: web.Request) -> None:
    """Refuse, before reading a byte of it, a body announced too large or compressed.

    A compressed body is never inflated: a megabyte of gzip can inflate to gigabytes, at
    the cost of the event loop's time (415, as RFC 7694 says, naming what is accepted).
    """
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding != "identity":
        raise InvalidRequest(
            "Compressed request bodies are not accepted: send the body without Content-Encoding.",
            status=415,
            code="unsupported_content_encoding",
            headers={hdrs.ACCEPT_ENCODING: "identity"},
        )
    length = request.content_length
    if length is not None and length > request.client_max_size:
        raise web.HTTPRequestEntityTooLarge(max_size=request.client_max_size, actual_size=length)


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every authenticated API request; hold slots while upstream work is in flight."""
    exchange = request[EXCHANGE]
    if not exchange.authenticated:
        return await handler(request)
    policy = exchange.key
    limiter = request.app[LIMITER]
    if request.method == "POST" and not request.app[LOOP_LAG].admits():
        # Starved of CPU: refused before it costs anything more (aichat.operations.loop_lag).
        raise limiter.refuse("event_loop")
    exchange.headers.update(await limiter.check_rate(policy))
    if request.method != "POST":
        return await handler(request)
    _check_body_head(request)
    # The whole body first (aiohttp keeps it for the handler): a client that sends it
    # slowly must not hold a slot that upstream work could use meanwhile, nor hold its
    # connection open for ever.
    try:
        if request.content.is_eof():
            await request.read()  # all here already: no timer needed
        else:
            async with asyncio.timeout(limiter.body_timeout):
                await request.read()
    except TimeoutError:
        raise APIError(
            "The request body did not arrive in time (AICHAT_BODY_TIMEOUT).",
            status=408,
            code="request_timeout",
            headers={"Connection": "close"},
        ) from None
    async with limiter.slot(policy):
        return await handler(request)
