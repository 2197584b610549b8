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

        self._errors = (RedisError, OSError, TimeoutError)
        self.client: Any = Redis.from_url(
            url, max_connections=max_connections, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._turns = asyncio.Semaphore(max_connections)
        self._wait = wait
        self._answering = True  # the last operation to end succeeded

    async def call(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``operation`` on a connection of its own, once a turn is free."""
        if not await acquire_within(self._turns, self._wait):
            if not self._answering:
                raise StoreUnavailable("Redis does not answer")
            raise StoreBusy(f"all Redis connections busy for {self._wait:g} s")
        try:
            result = await operation()
        except self._errors as exc:
            self._answering = False
            raise StoreUnavailable(type(exc).__name__) from None
        else:
            self._answering = True
            return result
        finally:
            self._turns.release()

    async def close(self) -> None:
        """Close every connection."""
        await self.client.aclose()


REDIS_POOL = web.AppKey("redis_pool", RedisPool)
