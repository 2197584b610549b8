"""A gateway starved of CPU: new API requests get a quick 503, what was admitted finishes.

Starvation is made, not waited for: a task blocks the event loop (``time.sleep``) for half a
second at a time with short breaks, as a process runs that gets a fraction of a busy core.
The lag it causes is at least what it blocks, however fast the machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aichat.core.config import ModelConfig
from aichat.operations.loop_lag import LOOP_LAG, LoopLag
from tests.conftest import Gateway, GatewayFactory
from tests.fakes import json_events, sse_events

# Six pieces, two a second: an answer that is still being written while the loop is starved.
SLOW = ModelConfig(name="slow", provider="mock", text="a b c d e f", tokens_per_second=2)
HELLO = {"messages": [{"role": "user", "content": "hi"}]}
LIMIT = 0.25  # seconds of lag (smoothed) before shedding


@asynccontextmanager
async def starved(block: float = 0.5) -> AsyncIterator[None]:
    """Block the event loop ``block`` seconds out of every ``block`` + 0.02."""

    async def hog() -> None:
        while True:
            time.sleep(block)  # noqa: ASYNC251 (the point: a loop that gets no CPU)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(hog())
    try:
        yield
    finally:
        task.cancel()


async def _until(check: LoopLag, behind: bool, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while check.behind() != behind:
        assert time.monotonic() < deadline, f"lag {check.lag:.3f} s, behind={not behind}"
        await asyncio.sleep(0.05)


async def _chat(gateway: Gateway) -> tuple[int, dict[str, str], bytes]:
    body = {"model": "slow", "stream": True, **HELLO}
    async with await gateway.post_chat(body) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_a_starved_gateway_sheds_new_requests_and_finishes_those_it_admitted(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(routes=(SLOW,), max_loop_lag=LIMIT)
    lag = gateway.app[LOOP_LAG]
    admitted = await gateway.post_chat({"model": "slow", "stream": True, **HELLO})
    assert admitted.status == 200
    async with starved():
        await _until(lag, behind=True)
        status, headers, raw = await _chat(gateway)
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert json.loads(raw)["error"]["code"] == "server_overloaded"
        health = await gateway.http.get(f"{gateway.url}/health")
        assert health.status == 200  # probes and scrapes are never shed
    raw = await admitted.read()
    assert sse_events(raw)[-1] == "[DONE]"
    chunks = json_events(raw)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "a b c d e f"

    await _until(lag, behind=False)  # the loop keeps up again: requests are admitted again
    deadline = time.monotonic() + 10
    while (status := (await _chat(gateway))[0]) == 503:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert status == 200
    metrics = await (await gateway.http.get(f"{gateway.url}/metrics")).text()
    shed = [
        line
        for line in metrics.splitlines()
        if line.startswith('aichat_rate_limit_rejections_total{limit="event_loop"}')
    ]
    assert shed and float(shed[0].split()[-1]) >= 1
    assert "aichat_event_loop_lag_seconds " in metrics


async def test_one_slow_moment_sheds_nothing_lasting_lateness_does(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(routes=(SLOW,), max_loop_lag=LIMIT)
    lag = gateway.app[LOOP_LAG]
    await asyncio.sleep(0.2)
    time.sleep(0.3)  # noqa: ASYNC251 (one slow callback: a large request, a collection)
    await asyncio.sleep(0.2)
    assert not lag.behind(), lag.lag
    async with starved():
        await _until(lag, behind=True)
