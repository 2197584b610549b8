"""Discovered models: listed from the upstream, served under a prefix, kept when listing fails."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from aichat.answer.discovery import DISCOVERY
from aichat.answer.reload import LIVE, reload_config
from aichat.core.config import ModelConfig, Settings
from tests.conftest import API_KEY, Gateway, GatewayFactory, _start
from tests.deploy.procs import free_port
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


async def test_an_unreachable_or_garbled_upstream_is_named_by_the_failures_message(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async def garbled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nX-Forged: \nWARNING forged line" + b"x" * 5000 + b"\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbled, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    routes = (
        ModelConfig(
            name="gone",
            provider="openai",
            base_url=f"http://127.0.0.1:{free_port()}/v1",
            models="discover",
        ),
        ModelConfig(
            name="garbled",
            provider="openai",
            base_url=f"http://127.0.0.1:{port}/v1",
            models="discover",
        ),
    )
    caplog.set_level(logging.WARNING, "aichat.discovery")
    async with server:
        await make_gateway(routes=routes)
    gone, bad = (r.getMessage() for r in caplog.records if r.name == "aichat.discovery")
    assert gone.startswith(
        "cannot list models of gone (ClientConnectorError: Cannot connect to host"
    )
    assert bad.startswith("cannot list models of garbled (")
    assert "\n" not in bad and len(bad) < 400
    assert bad.endswith("…): keeping the last 0")


def _schedule(gateway: Gateway, refresh_every: float, retry_every: float) -> None:
    """The refresh intervals (five minutes and 30 s in production), from now on."""
    discovery = gateway.app[DISCOVERY]
    discovery.refresh_every, discovery.retry_every = refresh_every, retry_every
    discovery.reschedule()


async def _until_listed(gateway: Gateway, name: str) -> None:
    for _ in range(200):  # up to 10 s: each step is one listing interval or more
        if name in await _listed(gateway):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} was never listed: {await _listed(gateway)}")


async def test_the_list_is_read_again_every_few_minutes(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up, url = openai_upstream
    gateway = await make_gateway(routes=_routes(url))
    _schedule(gateway, refresh_every=0.05, retry_every=3600)
    up.models = ["llama3.1", "phi4"]
    await _until_listed(gateway, "ol/phi4")
    assert await _content(gateway, "ol/phi4") == "Hi from upstream"


async def test_an_upstream_never_listed_is_tried_again_sooner(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up, url = openai_upstream
    up.models_status = 503
    gateway = await make_gateway(routes=_routes(url))
    assert await _listed(gateway) == {"ol/qwen2.5"}  # only the explicit one
    _schedule(gateway, refresh_every=3600, retry_every=0.05)
    up.models_status = 200
    await _until_listed(gateway, "ol/llama3.1")
    assert await _content(gateway, "ol/llama3.1") == "Hi from upstream"


async def test_a_discovery_route_a_reload_adds_is_refreshed_on_schedule(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up, url = openai_upstream
    echo = ModelConfig(name="echo", provider="mock")
    gateway = await make_gateway(routes=(echo,))
    settings = gateway.app[LIVE].settings
    _schedule(gateway, refresh_every=3600, retry_every=0.05)
    up.models_status = 503  # down when the reload adds it: retried every retry_every

    def load() -> Settings:
        return settings.model_copy(update={"routes": (echo, *_routes(url))})

    assert await reload_config(gateway.app, load)
    assert await _listed(gateway) == {"ol/qwen2.5", "echo"}
    up.models_status = 200
    await _until_listed(gateway, "ol/llama3.1")
    # Listed once: from now on every refresh_every, and no longer every retry_every.
    _schedule(gateway, refresh_every=0.05, retry_every=3600)
    up.models = ["llama3.1", "phi4"]
    await _until_listed(gateway, "ol/phi4")
    assert await _content(gateway, "ol/phi4") == "Hi from upstream"


LLAMA_FILE = "/srv/models/SmolLM2-135M-Instruct.Q4_1.gguf"


async def _models(gateway: Gateway, query: str = "") -> dict[str, dict[str, Any]]:
    response = await gateway.http.get(
        f"{gateway.url}/v1/models{query}", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status == 200
    body = await response.json()
    return {model["id"]: model for model in body["data"]} | {
        f"codex:{entry['slug']}": entry for entry in body.get("models", [])
    }


async def test_a_file_path_is_served_by_its_file_name_and_sent_upstream_as_listed(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up, url = openai_upstream
    up.listing = [  # llama.cpp's shape, and vLLM's
        {"id": LLAMA_FILE, "aliases": [LLAMA_FILE], "meta": {"n_ctx": 4096, "n_ctx_train": 8192}},
        {"id": "Qwen/Qwen2.5-7B-Instruct", "object": "model", "max_model_len": 32768},
    ]
    route = ModelConfig(name="local", provider="openai", base_url=url, models="discover")
    gateway = await make_gateway(routes=(route,))
    models = await _models(gateway)
    assert {name: model.get("context_window") for name, model in models.items()} == {
        "SmolLM2-135M-Instruct.Q4_1": 4096,
        "Qwen/Qwen2.5-7B-Instruct": 32768,
    }
    assert await _content(gateway, "SmolLM2-135M-Instruct.Q4_1") == "Hi from upstream"
    assert up.requests[-1]["model"] == LLAMA_FILE


async def test_a_configured_window_wins_over_the_listed_one(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up, url = openai_upstream
    up.listing = [{"id": "big", "max_model_len": 131072}]
    routes = (
        ModelConfig(
            name="vllm", provider="openai", base_url=url, models="discover", context_window=16384
        ),
        ModelConfig(name="fixed", provider="mock", context_window=2048),
        ModelConfig(name="unknown", provider="mock"),
    )
    gateway = await make_gateway(routes=routes)
    models = await _models(gateway)
    assert models["big"]["context_window"] == 16384
    assert models["fixed"]["context_window"] == 2048
    assert "context_window" not in models["unknown"]
    one = await gateway.http.get(
        f"{gateway.url}/v1/models/fixed", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert (await one.json())["context_window"] == 2048


@dataclass
class FakeOllama:
    """Ollama's OpenAI list, and its own API where it says more about each model."""

    shown: list[str] = field(default_factory=list)

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "library"}
            for name in ("llama3.1:8b", "qwen2.5:7b", "phi4:latest")
        ]
        return web.json_response({"object": "list", "data": data})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.6"})

    async def show(self, request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        self.shown.append(model)
        if model == "phi4:latest":
            return web.json_response({"error": "model 'phi4' not found"}, status=404)
        parameters = 'num_ctx 8192\nstop "<|eot_id|>"' if model == "llama3.1:8b" else ""
        return web.json_response(
            {
                "parameters": parameters,
                "template": "{{ .Prompt }}",
                "details": {"family": "llama", "parameter_size": "8.0B"},
                "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/api/version", self.version)
        app.router.add_post("/api/show", self.show)
        return app


async def test_ollama_is_asked_once_per_model_for_the_num_ctx_of_its_model_file(
    make_gateway: GatewayFactory,
) -> None:
    ollama = FakeOllama()
    runner, url = await _start(ollama.app())
    try:
        route = ModelConfig(
            name="ollama", provider="openai", base_url=f"{url}/v1", models="discover"
        )
        gateway = await make_gateway(routes=(route,))
        models = await _models(gateway)
        assert {name: model.get("context_window") for name, model in models.items()} == {
            "llama3.1:8b": 8192,
            "qwen2.5:7b": None,  # Ollama's default num_ctx is its server's: not said
            "phi4:latest": None,
        }
        settings = gateway.app[LIVE].settings
        assert await reload_config(gateway.app, lambda: settings)
        assert sorted(ollama.shown) == ["llama3.1:8b", "phi4:latest", "qwen2.5:7b"]
    finally:
        await runner.cleanup()


async def test_codex_reads_each_models_window_from_the_same_list(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up, url = openai_upstream
    up.listing = [{"id": LLAMA_FILE, "meta": {"n_ctx": 4096}}]
    routes = (
        ModelConfig(name="local", provider="openai", base_url=url, models="discover"),
        ModelConfig(name="echo", provider="mock"),
    )
    gateway = await make_gateway(routes=routes)
    assert not any(name.startswith("codex:") for name in await _models(gateway))
    models = await _models(gateway, "?client_version=0.171.0")
    smol, echo = models["codex:SmolLM2-135M-Instruct.Q4_1"], models["codex:echo"]
    assert smol["context_window"] == 4096 and "context_window" not in echo
    assert (smol["priority"], echo["priority"]) == (1, 0)
    assert smol["input_modalities"] == ["text", "image"] and echo["input_modalities"] == ["text"]
    assert smol["base_instructions"] and smol["visibility"] == "list"
