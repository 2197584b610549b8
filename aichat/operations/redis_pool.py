"""The process's Redis connections, shared by the rate limits and the budgets.

Decisions:

- One pool per process, of at most ``redis_max_connections`` connections, whatever uses it.
  Each operation takes a turn first, so the pool is never asked for more connections than
  it holds: redis-py's pool raises when it is, which would read as Redis being down.
- A burst beyond the pool waits for a turn (back-pressure, at most ``wait`` seconds), then
  ``StoreBusy``: callers answer 503 "at capacity" and never let a request through uncounted.
  Only a Redis that does not answer is ``StoreUnavailable``, which ``AICHAT_REDIS_FAILURE``
  decides about; turns all held by operations waiting on such a Redis are that too.
- Short socket timeouts: a dead Redis must cost a request milliseconds, not seconds.
- A timeout is this process's as often as Redis's: a process that stalls (a long garbage
  collection, a starved CPU) handles Redis's answers after their timeouts have fired. So a
  timed-out operation that can safely run twice (``idempotent``) is tried once more, unless
  Redis had already stopped answering; and a timeout while Redis answered other operations
  is ``StoreBusy``, never ``StoreUnavailable``: a live Redis is never taken for a dead one,
  which would let requests through uncounted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web


class StoreUnavailable(Exception):
    """The shared store cannot be reached."""


class StoreBusy(Exception):
    """Every connection to the store is in use, for longer than a request may wait."""


async def acquire_within(semaphore: asyncio.Semaphore, seconds: float) -> bool:
    """Take ``semaphore``, waiting at most ``seconds``; False if it stayed taken."""
    if not semaphore.locked():
        await semaphore.acquire()  # free: returns at once, no timer needed
        return True
    try:
        async with asyncio.timeout(seconds):
            await semaphore.acquire()
    except TimeoutError:
        return False
    return True


class RedisPool:
    """A bounded pool of Redis connections, one operation per turn.

    ``client`` builds commands, pipelines and scripts; ``call`` runs one of them.
    """

    def __init__(self, url: str, max_connections: int = 100, wait: float = 2.0) -> None:
        # Imported here: redis and what it pulls in cost about 8 MB of memory, for nothing
        # when REDIS_URL is not set.
        from redis.asyncio import Redis
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeout

        self._errors = (RedisError, OSError, TimeoutError)
        self._timeouts = (RedisTimeout, TimeoutError)
        self.client: Any = Redis.from_url(
            url, max_connections=max_connections, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._turns = asyncio.Semaphore(max_connections)
        self._wait = wait
        self._answering = True  # the last operation to end succeeded
        self._answers = 0  # operations that succeeded, ever

    async def call(
        self, operation: Callable[[], Awaitable[Any]], *, idempotent: bool = False
    ) -> Any:
        """Run ``operation`` on a connection of its own, once a turn is free; an
        ``idempotent`` one is tried again after a timeout (see the module's docstring)."""
        if not await acquire_within(self._turns, self._wait):
            if not self._answering:
                raise StoreUnavailable("Redis does not answer")
            raise StoreBusy(f"all Redis connections busy for {self._wait:g} s")
        again = idempotent and self._answering
        try:
            while True:
                answers = self._answers
                try:
                    result = await operation()
                except self._timeouts:
                    if again:
                        again = False
                        continue
                    if self._answers > answers:
                        raise StoreBusy("Redis answered others, not this in time") from None
                    self._answering = False
                    raise StoreUnavailable("TimeoutError") from None
                except self._errors as exc:
                    self._answering = False
                    raise StoreUnavailable(type(exc).__name__) from None
                self._answering = True
                self._answers += 1
                return result
        finally:
            self._turns.release()

    async def close(self) -> None:
        """Close every connection."""
        await self.client.aclose()


REDIS_POOL = web.AppKey("redis_pool", RedisPool)
