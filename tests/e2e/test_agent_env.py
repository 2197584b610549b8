"""``aichat agent-env``: what it prints for a model of a running gateway, and when it cannot."""

from __future__ import annotations

import asyncio
import re
import tomllib

import pytest

from aichat.agent_env import agent_env
from aichat.cli import main
from aichat.core.config import ConfigError, ModelConfig, Settings
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.deploy.procs import free_port

ROUTES = (
    ModelConfig(name="big", provider="mock", context_window=200_000),
    ModelConfig(name="small", provider="mock", context_window=8192),
    ModelConfig(name="unknown", provider="mock"),
)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway(routes=ROUTES)


async def _print(gateway: Gateway, agent: str, model: str, key: str = API_KEY) -> str:
    settings = Settings(api_keys=(key,))
    text, _ = await asyncio.to_thread(agent_env, settings, agent, model, gateway.url, None)
    return text


async def test_a_large_window_also_sets_claude_codes_auto_compact_window(gateway: Gateway) -> None:
    lines = (await _print(gateway, "claude", "big")).splitlines()
    assert "export CLAUDE_CODE_MAX_CONTEXT_TOKENS=200000" in lines
    assert "export CLAUDE_CODE_AUTO_COMPACT_WINDOW=200000" in lines
    small = (await _print(gateway, "claude", "small")).splitlines()
    assert "export CLAUDE_CODE_MAX_CONTEXT_TOKENS=8192" in small
    assert not any("AUTO_COMPACT" in line for line in small)  # below Claude Code's minimum


async def test_the_codex_config_is_toml_naming_the_catalog(gateway: Gateway) -> None:
    config = tomllib.loads(await _print(gateway, "codex", "small"))
    assert config["model"] == "small" and config["model_context_window"] == 8192
    provider = config["model_providers"][config["model_provider"]]
    assert provider["base_url"] == f"{gateway.url}/v1"
    assert provider["model_catalog_url"] == f"{gateway.url}/v1/models"
    assert config["features"]["api_key_model_discovery"] is True


async def test_a_model_without_a_window_gets_the_rest_and_a_note(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_SECRET", API_KEY)
    argv = ["--env-file", "/dev/null", "agent-env", "claude", "unknown", "--url", gateway.url]
    assert await asyncio.to_thread(main, argv) == 0
    out, err = capsys.readouterr()
    assert "export ANTHROPIC_MODEL=unknown" in out and "CONTEXT_TOKENS" not in out
    assert (
        err
        == "aichat: note: no context window is known for unknown (set context_window on its route)\n"
    )
    codex = tomllib.loads(await _print(gateway, "codex", "unknown"))
    assert "model_context_window" not in codex


@pytest.mark.parametrize(
    ("model", "key", "why"),
    [
        ("nope", API_KEY, "it serves no model 'nope'"),
        ("small", "sk-wrong-0123456789", "the key was refused (give --key)"),
    ],
)
async def test_a_model_it_cannot_ask_about_is_an_error_saying_why(
    gateway: Gateway, model: str, key: str, why: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{gateway.url}: {why}")):
        await _print(gateway, "claude", model, key)


def test_no_gateway_at_the_address_is_an_error_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=rf"^no aichat answers at {url} \(.*\): start it"):
        agent_env(Settings(api_keys=(API_KEY,)), "codex", "small", url, None)
