"""Outages of what the gateway depends on: each ends in a clear error for what it touches
only, and the gateway recovers by itself when the dependency does.

A Redis of the test's own is stopped and started again under running gateways; upstream
resets, stalls and half-written lines hit single requests among healthy ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from aichat.core.config import ModelConfig
from tests.conftest import API_KEY, Gateway, GatewayFactory, inside_one_rate_window
from tests.redis import RedisServer, redis_server
from tests.soak.chaos import ChaosUpstream, answer_pieces, error_code, prompt, read_stream, serving

pytestmark = pytest.mark.soak

AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUICK = ModelConfig(name="quick", provider="mock", text="fine")
RPM = 4


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own (it is stopped and started), not the run's shared one."""
    with redis_server() as server:
        yield server


async def _ask(gateway: Gateway) -> aiohttp.ClientResponse:
    body = {"model": "quick", "messages": [{"role": "user", "content": "hi"}]}
    resp = await gateway.http.post(f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH)
    await resp.read()
    return resp


async def test_a_redis_restart_under_running_gateways(
    make_gateway: GatewayFactory, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    gateways = {}
    for mode in ("open", "closed"):
        gateways[mode] = await make_gateway(
            routes=(QUICK,),
            redis_url=own_redis.url,
            redis_prefix=f"aichat-outage:{uuid.uuid4().hex}:",
            redis_failure=mode,
            rate_limit_rpm=RPM,
            max_concurrent_per_key=5,
        )
    await inside_one_rate_window(5 + 3)
    for gateway in gateways.values():
        resp = await _ask(gateway)
        assert resp.status == 200
        assert resp.headers["x-ratelimit-remaining-requests"] == str(RPM - 1)

    own_redis.stop()
    with caplog.at_level(logging.WARNING, logger="aichat.limits"):
        for _ in range(RPM + 1):  # beyond the limit: nothing can count them
            started = time.monotonic()
            allowed = await _ask(gateways["open"])
            assert allowed.status == 200
            assert "x-ratelimit-remaining-requests" not in allowed.headers
            refused = await _ask(gateways["closed"])
            assert refused.status == 503
            assert error_code(await refused.json()) == "rate_limit_store_unavailable"
            assert refused.headers["Retry-After"] == "1"
            assert time.monotonic() - started < 2  # a dead Redis costs no long waits
    assert "rate-limit store unavailable" in caplog.text

    # Back again, empty: both gateways count from scratch, without a restart of their own.
    own_redis.start()
    await inside_one_rate_window(5 + RPM + 1)
    for gateway in gateways.values():
        statuses = [(await _ask(gateway)).status for _ in range(RPM + 1)]
        assert statuses == [200] * RPM + [429], statuses


# A fault of each kind, the error its client gets, and whether its answer may have started:
# a fault mid-answer ends the stream with an error event, unless not even one piece of the
# answer had got through, when it is still an HTTP error.
FAULTS = {
    "reset_mid": ("upstream_error", True),
    "half_line": ("upstream_error", True),
    "stall_mid": ("upstream_timeout", True),
    "reset_early": ("upstream_error", False),
    "stall_early": ("upstream_timeout", False),
}
STATUSES = {"upstream_error": 502, "upstream_timeout": 504}
MODELS = ("via-aichats", "via-openai")


async def _stream(gateway: Gateway, model: str, n: int) -> tuple[int, Any]:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt(n)}]}
    resp = await gateway.http.post(f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH)
    return resp.status, await resp.read()


async def test_upstream_faults_end_only_the_requests_they_hit(
    make_gateway: GatewayFactory,
) -> None:
    faulty = {n: kind for n, kind in enumerate(FAULTS)}
    healthy = range(len(FAULTS), 4 * len(FAULTS))
    fake = ChaosUpstream(fates={**faulty, **dict.fromkeys(healthy, "ok")})
    async with serving(fake) as base:
        routes = (
            ModelConfig(name=MODELS[0], provider="aichats", base_url=base),
            ModelConfig(name=MODELS[1], provider="openai", base_url=f"{base}/v1"),
        )
        gateway = await make_gateway(
            routes=routes, first_byte_timeout=0.5, idle_timeout=0.5, retries=0
        )
        started_then_failed = 0
        for model in MODELS:
            numbers = [*faulty, *healthy]
            answers = await asyncio.gather(*(_stream(gateway, model, n) for n in numbers))
            for n, (status, raw) in zip(numbers, answers, strict=True):
                expected = "".join(answer_pieces(n))
                if n in faulty:
                    code, may_start = FAULTS[faulty[n]]
                    if status == 200 and may_start:
                        started_then_failed += 1
                        text, last = read_stream(raw)
                        assert expected.startswith(text)
                        assert error_code(json.loads(last)) == code, (model, faulty[n])
                    else:
                        assert status == STATUSES[code], (model, faulty[n], raw)
                        assert error_code(json.loads(raw)) == code, (model, faulty[n])
                else:
                    assert status == 200, (model, raw)
                    assert read_stream(raw) == (expected, "[DONE]"), model
        assert started_then_failed, "no fault hit an answer that had started"
