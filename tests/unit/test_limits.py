"""Rate and concurrency counting, in memory and in a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from aichat.core.errors import APIError
from aichat.core.exchange import KeyPolicy
from aichat.operations import limits
from aichat.operations.limits import (
    CounterStore,
    Limiter,
    MemoryStore,
    RateLimited,
    RedisStore,
)
from aichat.operations.redis_pool import RedisPool, StoreUnavailable
from tests.conftest import inside_one_rate_window


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    """A store on the real Redis, under a prefix of its own."""
    pool = RedisPool(redis_url)
    yield RedisStore(pool, f"aichat-test:{uuid.uuid4().hex}:")
    await pool.close()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> CounterStore:
    """Each kind of store, empty."""
    if request.param == "memory":
        return MemoryStore()
    redis_store: RedisStore = request.getfixturevalue("redis_store")
    return redis_store


async def test_rate_limit_counts_and_headers(store: CounterStore) -> None:
    limiter = Limiter(store, max_concurrent=10, queue_timeout=0.1, fail_open=True)
    policy = KeyPolicy("k", requests_per_minute=3)
    await inside_one_rate_window(2)
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


async def test_concurrency_slots(store: CounterStore) -> None:
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
    pool = RedisPool("redis://127.0.0.1:1/0")
    dead = RedisStore(pool, "x:")
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
        await pool.close()


@pytest.mark.parametrize("fail_open", [True, False])
async def test_a_burst_above_the_redis_pool_is_held_to_the_limits_exactly(
    fail_open: bool, redis_url: str
) -> None:
    # 300 at once on a pool of 20 connections: a full pool once counted as Redis being down,
    # so in `open` mode the burst went through uncounted. (A long wait for a turn: this is
    # about counting exactly, not about how long a loaded machine takes.)
    pool = RedisPool(redis_url, max_connections=20, wait=30)
    store = RedisStore(pool, f"aichat-test:{uuid.uuid4().hex}:")
    limiter = Limiter(store, max_concurrent=1000, queue_timeout=5, fail_open=fail_open)
    rate = KeyPolicy("rate", requests_per_minute=10)
    concurrent = KeyPolicy("conc", max_concurrent=2)
    await inside_one_rate_window(30)
    release = asyncio.Event()

    async def counted() -> int:
        try:
            await limiter.check_rate(rate)
        except APIError as err:
            return err.status
        return 200

    refused: list[int] = []

    async def held() -> int:
        try:
            async with limiter.slot(concurrent):
                await release.wait()
        except APIError as err:
            refused.append(err.status)
            if len(refused) == 298:  # all but the holders answered: let those go
                release.set()
            return err.status
        return 200

    try:
        rates = await asyncio.gather(*(counted() for _ in range(300)))
        slots = await asyncio.wait_for(asyncio.gather(*(held() for _ in range(300))), 10)
    finally:
        await pool.close()
    assert (rates.count(200), rates.count(429)) == (10, 290)
    assert (slots.count(200), slots.count(429)) == (2, 298)


async def test_a_busy_pool_makes_requests_wait_then_503_never_uncounted(redis_url: str) -> None:
    pool = RedisPool(redis_url, max_connections=1, wait=0.05)
    store = RedisStore(pool, f"aichat-test:{uuid.uuid4().hex}:")
    limiter = Limiter(store, max_concurrent=10, queue_timeout=0.05, fail_open=True)
    policy = KeyPolicy("k", requests_per_minute=1000)

    async def counted() -> tuple[int, str | None, str | None]:
        try:
            await limiter.check_rate(policy)
        except APIError as err:
            return err.status, err.code, err.headers.get("Retry-After")
        return 200, None, None

    try:
        async with pool._turns:  # the one connection is taken for a while
            statuses = await asyncio.gather(*(counted() for _ in range(5)))
        assert statuses == [(503, "server_overloaded", "1")] * 5
        assert limiter.rejection_counts() == {"store_busy": 5}
        assert [await counted() for _ in range(20)] == [(200, None, None)] * 20
    finally:
        await pool.close()


async def test_leases_are_short_and_renewed_while_held(
    redis_store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "LEASE", 0.5)
    limiter = Limiter(redis_store, max_concurrent=10, queue_timeout=0.1, fail_open=True)
    policy = KeyPolicy("k", max_concurrent=1)
    lease = await limiter.acquire(policy)
    for _ in range(4):  # a second past the lease, renewed along the way
        await asyncio.sleep(0.25)
        await limiter.keep_leases()
    with pytest.raises(RateLimited):
        await limiter.acquire(policy)
    # A holder that stops renewing (a replica that died) holds the slot half a second.
    limiter._held.clear()
    await asyncio.sleep(0.6)
    other = await limiter.acquire(policy)
    assert other is not None
    await limiter.release(policy, other)
    assert lease is not None


async def test_a_failed_release_is_retried_not_left_to_block_the_key(
    redis_store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = Limiter(redis_store, max_concurrent=10, queue_timeout=0.1, fail_open=True)
    policy = KeyPolicy("k", max_concurrent=1)
    lease = await limiter.acquire(policy)
    real_release = redis_store.release

    async def failing(key: str, lease: str) -> None:
        raise StoreUnavailable("TimeoutError")

    monkeypatch.setattr(redis_store, "release", failing)
    await limiter.release(policy, lease)
    with pytest.raises(RateLimited):  # the slot is still taken in Redis
        await limiter.acquire(policy)
    monkeypatch.setattr(redis_store, "release", real_release)
    await limiter.keep_leases()  # the next renewal round retries it
    again = await limiter.acquire(policy)
    await limiter.release(policy, again)


async def test_the_limiter_renews_in_the_background_until_stopped(
    redis_store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    renewed: list[dict[str, str]] = []

    async def renew(leases: dict[str, str]) -> None:
        renewed.append(leases)

    monkeypatch.setattr(limits, "RENEW_EVERY", 0.05)
    monkeypatch.setattr(redis_store, "renew", renew)
    limiter = Limiter(redis_store, max_concurrent=10, queue_timeout=0.1, fail_open=True)
    limiter.start()
    policy = KeyPolicy("k", max_concurrent=1)
    async with limiter.slot(policy):
        await asyncio.sleep(0.2)
    await limiter.stop()
    assert renewed
    assert all(list(leases.values()) == ["k"] for leases in renewed)


async def test_a_redis_that_does_not_answer_is_unavailable_not_busy() -> None:
    # Connections are accepted and never answered: every turn is held by a request waiting
    # for a dead Redis, and those waiting for a turn must fail open too, not get 503.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = RedisPool(f"redis://127.0.0.1:{port}/0", max_connections=2, wait=0.3)
    store = RedisStore(pool, "x:")
    limiter = Limiter(store, max_concurrent=10, queue_timeout=0.3, fail_open=True)
    policy = KeyPolicy("k", requests_per_minute=1)
    try:
        first = await limiter.check_rate(policy)  # times out: Redis is down, allowed
        burst = await asyncio.gather(*(limiter.check_rate(policy) for _ in range(10)))
    finally:
        await pool.close()
        server.close()
    assert first == {}
    assert burst == [{}] * 10
    assert limiter.rejection_counts() == {}
