"""Limits, circuits, drain and metrics, end to end against a running gateway."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import openai
import pytest

from aichat.core.config import KeyConfig, ModelConfig, load_settings
from aichat.operations.lifecycle import LIFECYCLE
from tests.conftest import API_KEY, Gateway, GatewayFactory, inside_one_rate_window
from tests.fakes import FakeAichats, json_events, sse_events

HELLO = [{"role": "user", "content": "hi"}]
SLOW = ModelConfig(name="slow", provider="mock", text="a b c d e f g h", tokens_per_second=10)


async def test_rate_limit_headers_and_429(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(rate_limit_rpm=2)
    await inside_one_rate_window(5)
    first = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    streamed = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert streamed.headers["x-ratelimit-remaining-requests"] == "0"
    async with gateway.sdk() as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.code == "rate_limit_exceeded"
    assert int(info.value.response.headers["Retry-After"]) >= 1
    assert info.value.response.headers["x-ratelimit-remaining-requests"] == "0"


async def test_keys_from_config_with_hashes_limits_and_models(
    tmp_path: Path, make_gateway: GatewayFactory, upstream: tuple[FakeAichats, str]
) -> None:
    digest = hashlib.sha256(b"sk-team-a").hexdigest()
    config = tmp_path / "aichat.toml"
    config.write_text(
        f"""
[[models]]
name = "gpt-4o"
provider = "aichats"
base_url = "{upstream[1]}"

[[models]]
name = "demo"
provider = "mock"

[[keys]]
name = "team-a"
key_sha256 = "{digest}"
models = ["demo"]
requests_per_minute = 100

[[keys]]
name = "ci"
key_env = "CI_KEY"
"""
    )
    settings = load_settings({"AICHAT_CONFIG": str(config), "CI_KEY": "sk-ci"}, dotenv_path=None)
    gateway = await make_gateway(api_keys=(), routes=settings.routes, keys=settings.keys)
    async with gateway.sdk("sk-team-a") as team:
        assert [m.id async for m in team.models.list()] == ["demo"]
        answer = await team.chat.completions.create(model="demo", messages=HELLO)
        assert answer.choices[0].message.content == "hi"
        with pytest.raises(openai.NotFoundError):
            await team.chat.completions.create(model="gpt-4o", messages=HELLO)
    async with gateway.sdk("sk-ci") as ci:
        assert [m.id async for m in ci.models.list()] == ["gpt-4o", "demo"]
    async with gateway.sdk(API_KEY) as old:
        with pytest.raises(openai.AuthenticationError):
            await old.models.list()


async def test_concurrency_limit_per_key(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(routes=(SLOW,), max_concurrent_per_key=1)
    first = await gateway.post_chat({"model": "slow", "messages": HELLO, "stream": True})
    assert first.status == 200
    second = await gateway.post_chat({"model": "slow", "messages": HELLO, "stream": True})
    assert second.status == 429
    assert (await second.json())["error"]["code"] == "rate_limit_exceeded"
    await first.read()
    third = await gateway.post_chat({"model": "slow", "messages": HELLO})
    assert third.status == 200


async def test_global_cap_answers_503_after_a_short_wait(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(routes=(SLOW,), max_concurrent=1, queue_timeout=0.2)
    first = await gateway.post_chat({"model": "slow", "messages": HELLO, "stream": True})
    started = time.monotonic()
    second = await gateway.post_chat({"model": "slow", "messages": HELLO})
    assert second.status == 503
    assert time.monotonic() - started >= 0.2
    assert (await second.json())["error"]["code"] == "server_overloaded"
    assert second.headers["Retry-After"] == "1"
    await first.read()


async def test_circuit_opens_and_skips_to_fallback(
    make_gateway: GatewayFactory, upstream: tuple[FakeAichats, str], fake: FakeAichats
) -> None:
    routes = (
        ModelConfig(name="gpt-4o", provider="aichats", fallbacks=("backup",)),
        ModelConfig(name="solo", provider="aichats"),
        ModelConfig(name="backup", provider="mock", text="backup answer"),
    )
    gateway = await make_gateway(routes=routes, retries=0, breaker_failures=2, breaker_cooldown=0.5)
    fake.status = 500
    for _ in range(2):
        resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
        assert (await resp.json())["choices"][0]["message"]["content"] == "backup answer"
    assert len(fake.requests) == 2
    # Open: the broken upstream is no longer even tried.
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    assert resp.headers["x-aichat-upstream"] == "backup (mock)"
    assert len(fake.requests) == 2
    metrics = await (await gateway.http.get(f"{gateway.url}/metrics")).text()
    assert 'aichat_circuit_state{upstream="gpt-4o (aichats)"} 2.0' in metrics
    # After the cooldown one trial goes through; the upstream has recovered: closed again.
    fake.status = 200
    await asyncio.sleep(0.5)
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    assert resp.headers["x-aichat-upstream"] == "gpt-4o (aichats)"
    assert len(fake.requests) == 3
    # Each model has its own circuit; "solo" has none open and no fallback.
    fake.status = 500
    for _ in range(2):
        assert (await gateway.post_chat({"model": "solo", "messages": HELLO})).status == 502
    fast = await gateway.post_chat({"model": "solo", "messages": HELLO})
    assert fast.status == 503
    assert (await fast.json())["error"]["code"] == "upstream_unavailable"


async def test_drain_lets_streams_finish_then_ends_the_rest_with_an_error(
    make_gateway: GatewayFactory,
) -> None:
    quick = ModelConfig(name="quick", provider="mock", text="x y z", tokens_per_second=20)
    never = ModelConfig(name="never", provider="mock", text="a " * 1000, tokens_per_second=5)
    gateway = await make_gateway(routes=(quick, never))
    finishing = await gateway.post_chat({"model": "quick", "messages": HELLO, "stream": True})
    endless = await gateway.post_chat({"model": "never", "messages": HELLO, "stream": True})
    drain = asyncio.create_task(gateway.app[LIFECYCLE].drain(0.5))
    await asyncio.sleep(0.05)
    ready = await gateway.http.get(f"{gateway.url}/ready")
    assert ready.status == 503
    refused = await gateway.post_chat({"model": "quick", "messages": HELLO})
    assert refused.status == 503
    assert (await refused.json())["error"]["code"] == "server_shutting_down"
    assert sse_events(await finishing.read())[-1] == "[DONE]"
    raw = await endless.read()
    assert "[DONE]" not in sse_events(raw)
    assert json_events(raw)[-1]["error"]["code"] == "server_shutting_down"
    assert await drain == 1


async def test_metrics_endpoint(gateway: Gateway, make_gateway: GatewayFactory) -> None:
    await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    await gateway.post_chat({"model": "no-such-model", "messages": HELLO})
    resp = await gateway.http.get(f"{gateway.url}/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert (
        'aichat_requests_total{model="gpt-4o",status="200",upstream="gpt-4o (aichats)"} 1.0' in text
    )
    assert 'aichat_requests_total{model="-",status="404",upstream="-"} 1.0' in text
    assert "no-such-model" not in text
    assert 'aichat_time_to_first_token_seconds_count{model="gpt-4o"} 1.0' in text
    assert "aichat_open_streams 0.0" in text
    protected = await make_gateway(metrics_key="sk-metrics")
    assert (await protected.http.get(f"{protected.url}/metrics")).status == 401
    ok = await protected.http.get(
        f"{protected.url}/metrics", headers={"Authorization": "Bearer sk-metrics"}
    )
    assert ok.status == 200


async def test_upstream_errors_and_retries_are_counted(
    make_gateway: GatewayFactory, fake: FakeAichats
) -> None:
    gateway = await make_gateway(retries=1, retry_backoff=0.001)
    fake.status = 503
    await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    text = await (await gateway.http.get(f"{gateway.url}/metrics")).text()
    assert (
        'aichat_upstream_errors_total{code="upstream_error",upstream="gpt-4o (aichats)"} 2.0'
        in text
    )
    assert 'aichat_upstream_retries_total{upstream="gpt-4o (aichats)"} 1.0' in text


def test_unused_key_config_fields_are_rejected() -> None:
    with pytest.raises(ValueError, match="name"):
        KeyConfig(name="has space", key_env="X")
