"""Budget holds, in memory and in a real Redis: admission against what is spent and held,
releases after charges, lapsed holds of a process that died."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from aichat.operations import budgets
from aichat.operations.budgets import Hold, MemoryUsage, RedisUsage, UsageStore
from aichat.operations.redis_pool import RedisPool

WINDOWS = ("2026-12-02", "2026-12")
LIMITS = (1000, 0)  # a day's budget, no month's


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[UsageStore]:
    """Each kind of store, empty."""
    if request.param == "memory":
        yield MemoryUsage()
        return
    pool = RedisPool(request.getfixturevalue("redis_url"))
    redis_store = RedisUsage(pool, f"aichat-test:{uuid.uuid4().hex}:")
    yield redis_store
    await redis_store.close()
    await pool.close()


def _hold() -> Hold:
    return Hold("k", uuid.uuid4().hex)


async def test_a_request_is_admitted_while_spent_and_held_are_under_the_budget(
    store: UsageStore,
) -> None:
    store.charge(WINDOWS, {"k": 400})
    # Written (Redis): while a write is in flight its charges count twice, never not at all.
    await asyncio.sleep(0.1)
    first, second = _hold(), _hold()
    assert await store.hold(WINDOWS, first, 500, LIMITS) == (True, (400, 400))
    assert await store.hold(WINDOWS, second, 500, LIMITS) == (True, (900, 900))
    assert (await store.hold(WINDOWS, _hold(), 1, LIMITS))[0] is False  # 1,400 spent or held
    store.charge(WINDOWS, {"k": 50})  # the first one's real usage, then its release
    store.release(first)
    await asyncio.sleep(0.1)  # Redis: the writer sends both
    assert await store.hold(WINDOWS, _hold(), 1, LIMITS) == (True, (950, 950))


async def test_a_hold_never_released_lapses(
    store: UsageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budgets, "HOLD_SECONDS", 0.3)
    assert (await store.hold(WINDOWS, _hold(), 5000, LIMITS))[0] is True
    assert (await store.hold(WINDOWS, _hold(), 1, LIMITS))[0] is False
    if isinstance(store, MemoryUsage):
        return  # its holds die with the process that holds them
    await asyncio.sleep(0.5)
    assert await store.hold(WINDOWS, _hold(), 1, LIMITS) == (True, (0, 0))
