"""Claude Code and the Codex CLI through aichat to llama.cpp and a real model: one turn each.

The gateway (a process of its own, a recorder in front) serves what llama.cpp lists, so the
model is named by its file and known with the window llama.cpp states for a slot; each agent
is set up by ``aichat agent-env`` as the README says. Each must then act on the window: Claude
Code refuses a turn that cannot fit in it, and Codex finds the model, window and all, in the
catalog aichat serves (no "Model metadata ... not found" warning, which the same Codex prints
with the catalog turned off).

A coding agent's first request is larger than the 4,096 tokens a slot of the test server
holds, so each agent runs trimmed: Claude Code bare, without tools and with a one-line system
prompt, Codex without sub-agents, goals and web search. Answers stop after a few tokens:
Claude Code is told so (``CLAUDE_CODE_MAX_OUTPUT_TOKENS``), and Codex, which sets no length,
gets llama.cpp's default (``MAX_TOKENS``). Claude Code keeps a reserve for its summary that
is larger than the whole window, so it would try to compact before every answer; the test
turns that off (``DISABLE_AUTO_COMPACT``) after showing that the window is in force.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.agents.conftest import Clis, Run, recorded_gateway, run_agent
from tests.agents.recorder import Recorder
from tests.agents.test_agents import (
    APIS,
    METADATA_WARNING,
    claude_command,
    claude_output,
    codex_command,
    codex_output,
    streamed_text,
)
from tests.deploy.procs import Server
from tests.llama.server import SLOT_CONTEXT, Llama

pytestmark = [
    pytest.mark.slow,
    pytest.mark.llama,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(600),
]

MODEL = "SmolLM2-135M-Instruct.Q4_1"  # as the gateway names llama.cpp's model file
PROMPT = "Say hello."
ANSWER_TOKENS = 96  # Claude Code's answers, and the room it keeps for one


@dataclass
class Gateway:
    """The gateway in front of llama.cpp, and the recorder in front of it."""

    server: Server
    recorder: Recorder
    url: str  # the recorder's


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(llama: Llama, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """A gateway serving whatever llama.cpp lists, for the module."""
    config = f'[[models]]\nname = "llama"\nprovider = "openai"\nbase_url = "{llama.url}/v1"\n'
    config += 'models = "discover"\n'
    async with recorded_gateway(config, tmp_path_factory.mktemp("gateway")) as recorded:
        yield Gateway(*recorded)


async def _setup(
    clis: Clis, gateway: Gateway, agent: str, tmp_path: Path
) -> tuple[list[str], dict[str, str], Path]:
    """``agent``'s command and environment as ``aichat agent-env`` sets it up, and where it
    works."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    build = claude_command if agent == "claude" else codex_command
    command, env = await build(clis, gateway.url, MODEL, home)
    return command, env, work


async def _turn(
    gateway: Gateway, agent: str, command: list[str], env: dict[str, str], work: Path
) -> Run:
    """One turn of ``agent``, which must end well, its answer coming from the gateway."""
    start = len(gateway.recorder.exchanges)
    run = await run_agent([*command, PROMPT], env, work)
    assert run.returncode == 0, run.report()
    asked = gateway.recorder.model_requests(start)
    assert asked, run.report()
    texts = [streamed_text(agent, exchange) for exchange in asked]
    assert all(exchange.path.startswith(f"/v1/{APIS[agent][0]}") for exchange in asked)
    assert any(texts), texts
    return run


async def test_claude_code_acts_on_the_window_and_answers(
    clis: Clis, gateway: Gateway, tmp_path: Path
) -> None:
    command, env, work = await _setup(clis, gateway, "claude", tmp_path)
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == str(SLOT_CONTEXT)
    command += ["--bare", "--tools", "", "--system-prompt", "Answer briefly."]
    # Its default room for an answer (thousands of tokens) does not fit in the window it was
    # told: it stops before sending anything, as it would not for the 200,000 it assumes.
    start = len(gateway.recorder.exchanges)
    blocked = await run_agent([*command, PROMPT], env, work)
    (result,) = [e for e in blocked.events() if e.get("type") == "result"]
    assert (result["terminal_reason"], result["result"]) == ("blocking_limit", "Prompt is too long")
    assert not gateway.recorder.model_requests(start), blocked.report()
    env |= {"CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(ANSWER_TOKENS), "DISABLE_AUTO_COMPACT": "1"}
    run = await _turn(gateway, "claude", command, env, work)
    output = claude_output(run)
    assert output.answer.strip() and output.streamed, run.report()


async def test_codex_reads_the_window_from_aichats_catalog_and_answers(
    clis: Clis, gateway: Gateway, tmp_path: Path
) -> None:
    command, env, work = await _setup(clis, gateway, "codex", tmp_path)
    command += ["-c", 'web_search="disabled"', "-c", "features.goals=false"]
    command += ["-c", "agents.enabled=false"]
    # Without the catalog Codex warns where codex_output looks, which shows the look works.
    uncatalogued = [*command, "-c", "features.api_key_model_discovery=false", PROMPT]
    control = await run_agent(uncatalogued, env, work)
    warning = f"{METADATA_WARNING}{MODEL}` not found. Defaulting to fallback metadata"
    assert warning in control.stdout, control.report()
    start = len(gateway.recorder.exchanges)
    run = await _turn(gateway, "codex", command, env, work)
    output = codex_output(run)  # which also finds no "Model metadata" warning
    assert output.answer.strip() and output.streamed, run.report()
    catalogs = [
        json.loads(e.response)["models"]
        for e in gateway.recorder.exchanges[start:]
        if e.method == "GET" and e.path.startswith("/v1/models?client_version=")
    ]
    assert catalogs, [e.path for e in gateway.recorder.exchanges[start:]]
    (entry,) = [m for m in catalogs[-1] if m["slug"] == MODEL]
    assert entry["context_window"] == SLOT_CONTEXT
