"""Discovered models: listed from the upstream, served under a prefix, kept when listing fails."""

from __future__ import annotations

import asyncio
import logging

import pytest

from aichat.answer.reload import LIVE, reload_config
from aichat.core.config import ModelConfig, Settings
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.fakes import FakeOpenAI

HELLO = [{"role": "user", "content": "hi"}]


def _routes(url: str) -> tuple[ModelConfig, ...]:
    return (
        ModelConfig(name="local", provider="openai", base_url=url, models="discover", prefix="ol/"),
        ModelConfig(name="ol/qwen2.5", provider="mock", text="explicit wins"),
    )


async def _listed(gateway: Gateway) -> set[str]:
    response = await gateway.http.get(
        f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    return {model["id"] for model in (await response.json())["data"]}


async def _content(gateway: Gateway, model: str) -> str:
    response = await gateway.post_chat({"model": model, "messages": HELLO})
    assert response.status == 200, await response.text()
    content: str = (await response.json())["choices"][0]["message"]["content"]
    return content


async def test_discovered_models_answer_under_their_prefix_and_explicit_ones_win(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up, url = openai_upstream
    gateway = await make_gateway(routes=_routes(url))
    assert await _listed(gateway) == {"ol/llama3.1", "ol/qwen2.5"}
    assert await _content(gateway, "ol/llama3.1") == "Hi from upstream"
    assert up.requests[-1]["model"] == "llama3.1"  # the prefix stays here
    assert await _content(gateway, "ol/qwen2.5") == "explicit wins"
    missing = await gateway.post_chat({"model": "local", "messages": HELLO})
    assert missing.status == 404  # the table names the upstream, not a model


async def test_an_unlistable_upstream_keeps_its_last_list_and_says_why(
    make_gateway: GatewayFactory,
    openai_upstream: tuple[FakeOpenAI, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    up, url = openai_upstream
    gateway = await make_gateway(routes=_routes(url))
    settings = gateway.app[LIVE].settings

    def load() -> Settings:
        return settings

    up.models_status = 500
    caplog.set_level(logging.WARNING, "aichat.discovery")
    assert await reload_config(gateway.app, load)
    assert "cannot list models of local (HTTP 500): keeping the last 2" in caplog.text
    assert await _content(gateway, "ol/llama3.1") == "Hi from upstream"
    up.models_status, up.models = 200, ["mistral"]
    assert await reload_config(gateway.app, load)  # a reload lists again
    assert await _listed(gateway) == {"ol/mistral", "ol/qwen2.5"}


async def test_the_list_is_read_again_every_few_minutes(
    make_gateway: GatewayFactory,
    openai_upstream: tuple[FakeOpenAI, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("aichat.answer.reload.REFRESH", 0.05)
    up, url = openai_upstream
    gateway = await make_gateway(routes=_routes(url))
    up.models = ["llama3.1", "phi4"]
    for _ in range(100):  # up to 5 s
        if "ol/phi4" in await _listed(gateway):
            break
        await asyncio.sleep(0.05)
    assert await _content(gateway, "ol/phi4") == "Hi from upstream"


async def test_an_upstream_never_listed_is_tried_again_sooner(
    make_gateway: GatewayFactory,
    openai_upstream: tuple[FakeOpenAI, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("aichat.answer.reload.RETRY_UNLISTED", 0.05)  # REFRESH stays five minutes
    up, url = openai_upstream
    up.models_status = 503
    gateway = await make_gateway(routes=_routes(url))
    assert await _listed(gateway) == {"ol/qwen2.5"}  # only the explicit one
    up.models_status = 200
    for _ in range(100):  # up to 5 s
        if "ol/llama3.1" in await _listed(gateway):
            break
        await asyncio.sleep(0.05)
    assert await _content(gateway, "ol/llama3.1") == "Hi from upstream"
