"""Bursts far above the Redis pool, through two gateway replicas sharing one real Redis:
rate and concurrency limits hold exactly, and nothing is refused as "store unavailable".

A full pool once counted as Redis being down, so bursts went through uncounted (the
default `open` mode) or got 503 (`closed`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter

import aiohttp
import pytest

from aichat.core.config import KeyConfig, ModelConfig
from tests.conftest import Gateway, GatewayFactory

pytestmark = [pytest.mark.soak, pytest.mark.timeout(60)]

ROUTES = (
    ModelConfig(name="quick", provider="mock", text="fine"),
    ModelConfig(name="slow", provider="mock", text="a b c d e f", tokens_per_second=2),
)
RATE_KEY, PAIR_KEY = "sk-burst-rate-0123456789", "sk-burst-pair-0123456789"
RPM, CONCURRENT, BURST, POOL = 50, 2, 400, 10


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


KEYS = (
    KeyConfig(name="rate", key_sha256=_sha(RATE_KEY), requests_per_minute=RPM),
    KeyConfig(name="pair", key_sha256=_sha(PAIR_KEY), max_concurrent=CONCURRENT),
)


async def _replicas(make_gateway: GatewayFactory, redis_url: str, mode: str) -> list[Gateway]:
    prefix = f"aichat-burst:{uuid.uuid4().hex}:"
    return [
        await make_gateway(
            routes=ROUTES,
            keys=KEYS,
            redis_url=redis_url,
            redis_prefix=prefix,
            redis_failure=mode,
            redis_max_connections=POOL,
            max_concurrent=1000,
            queue_timeout=30,  # exact counts are the point here, not a loaded machine's pace
        )
        for _ in range(2)
    ]


async def _burst(
    http: aiohttp.ClientSession, replicas: list[Gateway], key: str, model: str
) -> Counter[int]:
    async def one(n: int) -> int:
        body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        url = f"{replicas[n % 2].url}/v1/chat/completions"
        async with http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
            await r.read()
            return r.status

    return Counter(await asyncio.gather(*(one(n) for n in range(BURST))))


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_bursts_above_the_pool_are_held_to_the_limits_exactly(
    make_gateway: GatewayFactory, redis_url: str, mode: str
) -> None:
    replicas = await _replicas(make_gateway, redis_url, mode)
    if time.time() % 60 > 50:  # one fixed window for the whole burst
        await asyncio.sleep(61 - time.time() % 60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        rates = await _burst(http, replicas, RATE_KEY, "quick")
        pairs = await _burst(http, replicas, PAIR_KEY, "slow")
    assert rates == {200: RPM, 429: BURST - RPM}
    assert pairs == {200: CONCURRENT, 429: BURST - CONCURRENT}
