"""Rate and concurrency counting, in memory and in a real Redis."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from aichat.auth import KeyPolicy
from aichat.errors import APIError
from aichat.limits import Limiter, MemoryStore, RateLimited, RedisStore

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
async def redis_store() -> AsyncIterator[RedisStore]:
    """A store on the real Redis, under a prefix of its own."""
    store = RedisStore(REDIS_URL, f"aichat-test:{uuid.uuid4().hex}:")
    yield store
    await store.close()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_rate_limit_counts_and_headers(kind: str, redis_store: RedisStore) -> None:
    store = MemoryStore() if kind == "memory" else redis_store
    limiter = Limiter(store, max_concurrent=10, queue_timeout=0.1, fail_open=True)
    policy = KeyPolicy("k", requests_per_minute=3)
    remaining = [
        (await limiter.check_rate(policy))["x-ratelimit-remaining-requests"] for _ in range(3)
    ]
    assert remaining == ["2", "1", "0"]
    with pytest.raises(RateLimited) as info:
        await limiter.check_rate(policy)
    assert info.value.status == 429
    assert info.value.code == "rate_limit_exceeded"
    assert int(info.value.headers["Retry-After"]) >= 1
    assert info.value.headers["x-ratelimit-limit-requests"] == "3"
    assert limiter.rejection_counts() == {"requests_per_minute": 1}
    assert await limiter.check_rate(KeyPolicy("unlimited")) == {}


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_concurrency_slots(kind: str, redis_store: RedisStore) -> None:
    store = MemoryStore() if kind == "memory" else redis_store
    limiter = Limiter(store, max_concurrent=10, queue_timeout=0.1, fail_open=True)
    policy = KeyPolicy("k", max_concurrent=2)
    async with limiter.slot(policy), limiter.slot(policy):
        with pytest.raises(RateLimited):
            async with limiter.slot(policy):
                pass
    async with limiter.slot(policy), limiter.slot(policy):
        pass  # both slots were given back


async def test_global_cap_waits_then_overloads() -> None:
    limiter = Limiter(MemoryStore(), max_concurrent=1, queue_timeout=0.2, fail_open=True)
    anyone = KeyPolicy("k")
    release = asyncio.Event()

    async def hold() -> None:
        async with limiter.slot(anyone):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    with pytest.raises(APIError) as info:
        async with limiter.slot(anyone):
            pass
    assert info.value.status == 503
    assert info.value.code == "server_overloaded"
    waiter = asyncio.create_task(limiter.slot(anyone).__aenter__())
    release.set()
    await holder
    await asyncio.wait_for(waiter, 1)  # a short wait is served once a slot frees


async def test_redis_down_fails_open_or_closed() -> None:
    dead = RedisStore("redis://127.0.0.1:1/0", "x:")
    policy = KeyPolicy("k", requests_per_minute=1, max_concurrent=1)
    try:
        open_limiter = Limiter(dead, max_concurrent=5, queue_timeout=0.1, fail_open=True)
        for _ in range(3):
            assert await open_limiter.check_rate(policy) == {}
            async with open_limiter.slot(policy):
                pass
        closed = Limiter(dead, max_concurrent=5, queue_timeout=0.1, fail_open=False)
        with pytest.raises(APIError) as info:
            await closed.check_rate(policy)
        assert info.value.status == 503
        assert info.value.code == "rate_limit_store_unavailable"
    finally:
        await dead.close()
