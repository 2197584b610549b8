"""Claude Code and the Codex CLI, unchanged, through aichat: text, streaming and a tool round trip.

Each agent runs non-interactively (``claude -p``, ``codex exec``) in a fresh home and working
directory, pointed at aichat in front of (a) the mock provider, (b) an OpenAI-compatible
upstream and (c) the aichats provider with emulated tools. The upstreams in (b) and (c) think,
then call the agent's shell tool to read a file the test wrote, and answer with the file's
secret once the command's output comes back. Every run must exit 0 with the expected answer,
show the answer streaming (and the thinking as thinking), really run the command, and leave
no 4xx/5xx in the gateway's access log.

The requests the agents send are recorded in ``tests/conformance/vectors/agent_*.json`` and
replayed without the CLIs by ``tests/conformance/test_agent_traffic.py``. To record them again
(after changing a version in ``package.json`` here and running ``npm install
--package-lock-only``)::

    RECORD_AGENT_TRAFFIC=1 .venv/bin/pytest tests/agents
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.agents.conftest import MOCK_TEXT, MODELS, UPSTREAM_MODELS, Clis, Run, Stack, run_agent
from tests.agents.recorder import Exchange, Recording
from tests.agents.upstream import SIGNATURE, THOUGHT, AgentUpstream, Task
from tests.conformance.checks import READERS, Outcome, parse_sse
from tests.deploy.procs import API_KEY

# The first test may wait for ``npm ci`` (about 800 MB); each agent run is bounded by itself.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(420),
]

VECTORS = Path(__file__).resolve().parents[1] / "conformance" / "vectors"
RECORD = os.environ.get("RECORD_AGENT_TRAFFIC") == "1"
PROMPT_TEXT = "say hi"
PROMPT_TOOL = "What does the file note.txt in the current directory say?"
COMMAND = "cat note.txt"
RECORDED_SECRET = "note-recorded"
# How the Codex CLI's warning about a model missing from its catalog begins.
METADATA_WARNING = "Model metadata for `"
# Both agents may reach 127.0.0.1 only: no telemetry, update checks or error reports.
QUIET = {
    "NO_PROXY": "127.0.0.1,localhost",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}


def _base_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", **QUIET}


async def agent_env(agent: str, url: str, model: str, home: Path) -> str:
    """What ``aichat agent-env`` prints for ``agent`` and ``model`` at ``url`` (the recorder's
    address): the settings the README tells users to take (tests/e2e/test_readme.py runs it as
    printed). A process of its own, as a user runs it, while this loop serves the recorder.
    """
    command = ["agent-env", agent, model, "--url", url, "--key", API_KEY]
    env = {"PATH": os.environ["PATH"], "NO_PROXY": "127.0.0.1,localhost"}
    result = await run_agent([sys.executable, "-m", "aichat", *command], env, home)
    assert result.returncode == 0, result.report()
    return result.stdout


async def claude_command(
    clis: Clis, url: str, model: str, home: Path
) -> tuple[list[str], dict[str, str]]:
    """``claude -p`` printing its stream as JSON events, Bash allowed without asking."""
    env = _base_env(home)
    for line in (await agent_env("claude", url, model, home)).splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        (env[name],) = shlex.split(value.replace("$APP_SECRET", API_KEY))
    env["ANTHROPIC_SMALL_FAST_MODEL"] = model  # the name older releases read
    command = [
        str(clis.claude),
        "--output-format=stream-json",
        "--verbose",
        "--include-partial-messages",
        "--allowedTools=Bash",
        "--no-session-persistence",
        "-p",
    ]
    return command, env


async def codex_command(
    clis: Clis, url: str, model: str, home: Path
) -> tuple[list[str], dict[str, str]]:
    """``codex exec --json`` with aichat as a Responses provider, commands run unsandboxed."""
    codex_home = home / ".codex"
    codex_home.mkdir()
    config = await agent_env("codex", url, model, home)
    (codex_home / "config.toml").write_text(f"{config}[feedback]\nenabled = false\n")
    env = {**_base_env(home), "CODEX_HOME": str(codex_home), "AICHAT_API_KEY": API_KEY}
    command = [
        *clis.codex,
        "exec",
        "--json",
        "--strict-config",
        "--skip-git-repo-check",
        "--ephemeral",
        "--dangerously-bypass-approvals-and-sandbox",
    ]
    return command, env


@dataclass
class Output:
    """What an agent printed: its final answer, whether it streamed, what its commands printed."""

    answer: str
    streamed: bool
    command_outputs: list[str]
    reasoning: str  # the model's thinking, as the agent showed it


def _claude_deltas(events: list[dict[str, Any]], kind: str, field: str) -> str:
    """The ``kind`` deltas (``text_delta``, ``thinking_delta``) of Claude Code's stream, joined."""
    return "".join(
        e["event"]["delta"][field]
        for e in events
        if e.get("type") == "stream_event"
        and e["event"].get("type") == "content_block_delta"
        and e["event"]["delta"].get("type") == kind
    )


def claude_output(run: Run) -> Output:
    """``claude -p --output-format=stream-json``: deltas as they came, then a result."""
    events = run.events()
    results = [e for e in events if e.get("type") == "result"]
    assert len(results) == 1 and results[0]["subtype"] == "success", run.report()
    answer = results[0]["result"]
    text = _claude_deltas(events, "text_delta", "text")
    outputs = [
        json.dumps(block["content"])
        for e in events
        if e.get("type") == "user"
        for block in e["message"]["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]
    thinking = _claude_deltas(events, "thinking_delta", "thinking")
    return Output(answer, bool(text) and text.endswith(answer), outputs, thinking)


def codex_output(run: Run) -> Output:
    """``codex exec --json``: one event per line, from the thread's start to the turn's end."""
    events = run.events()
    kinds = [e["type"] for e in events]
    items = [e["item"] for e in events if e["type"] == "item.completed"]
    messages = [i["text"] for i in items if i["type"] == "agent_message"]
    assert messages, run.report()
    outputs = [
        i["aggregated_output"]
        for i in items
        if i["type"] == "command_execution" and i["exit_code"] == 0
    ]
    reasoning = "".join(i["text"] for i in items if i["type"] == "reasoning")
    streamed = kinds[0] == "thread.started" and kinds[-1] == "turn.completed"
    # aichat's catalog (model_catalog_url) describes every model it serves, so Codex never
    # says it does not know one (an ``error`` item, in the pinned release), anywhere.
    assert METADATA_WARNING not in run.stdout + run.stderr, run.report()
    return Output(messages[-1], streamed, outputs, reasoning)


Agent = tuple[
    Callable[[Clis, str, str, Path], Awaitable[tuple[list[str], dict[str, str]]]],
    Callable[[Run], Output],
]
AGENTS: dict[str, Agent] = {
    "claude": (claude_command, claude_output),
    "codex": (codex_command, codex_output),
}
# Each agent's command tool and the argument its declared schema names the command by.
TOOLS = {"claude": ("Bash", "command"), "codex": ("exec_command", "cmd")}
# The API each agent speaks and that API's last event of a complete answer.
APIS = {"claude": ("messages", "message_stop"), "codex": ("responses", "response.completed")}
FIXTURES = {"claude": "agent_claude_code", "codex": "agent_codex"}
PACKAGES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex"}


@pytest.fixture(scope="module")
def recordings(clis: Clis) -> Iterator[dict[str, Recording]]:
    """The requests to keep as fixtures; written at the end with ``RECORD_AGENT_TRAFFIC=1``."""
    made = {}
    for agent, (tool, argument) in TOOLS.items():
        meta = {
            "agent": PACKAGES[agent],
            "version": clis.versions[agent],
            "api": APIS[agent][0],
            "recorded_by": "RECORD_AGENT_TRAFFIC=1 .venv/bin/pytest tests/agents",
            "task": {"tool": tool, "arguments": {argument: COMMAND}, "secret": RECORDED_SECRET},
        }
        made[agent] = Recording(meta)
    yield made
    names = ["first", "tool_result"]
    for agent, recording in made.items():
        if RECORD and set(names) <= recording.requests.keys():  # not after a partial run
            recording.save(VECTORS / f"{FIXTURES[agent]}.json", names)


def _replacements(tmp_path: Path, model: str, secret: str | None = None) -> dict[str, str]:
    # Claude Code also names a folder after the working directory, punctuation made dashes.
    root = str(tmp_path)
    out = {root: "/tmp/agent-run", re.sub(r"[^A-Za-z0-9]", "-", root): "-tmp-agent-run"}
    out[model] = "{model}"
    for today in {date.today(), datetime.now(UTC).date()}:
        out[today.isoformat()] = "2000-01-01"
    if secret:
        out[secret] = RECORDED_SECRET
    return out


def streamed_text(agent: str, exchange: Exchange) -> str:
    """The answer text of one streamed answer of the gateway, checked for a complete stream."""
    assert exchange.status == 200, exchange.response[-2000:]
    assert exchange.response_headers["Content-Type"].startswith("text/event-stream")
    api, last = APIS[agent]
    events = parse_sse(exchange.response, named=True)
    assert events[-1][0] == last, events[-3:]
    outcome = Outcome()
    READERS[api][1](outcome, [data for _, data in events])
    assert not outcome.stream_error
    return outcome.text


async def _run(
    clis: Clis, stack: Stack, agent: str, kind: str, prompt: str, tmp_path: Path
) -> tuple[Output, list[Exchange]]:
    """Run ``agent`` on ``prompt`` against the model of upstream ``kind``; check the traffic.

    The agent exited 0 and printed its answer as a stream; each of its requests asked for a
    stream and got a complete one, which the gateway logged with a status below 400.
    """
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir(exist_ok=True)
    command, env = await AGENTS[agent][0](clis, stack.url, MODELS[kind], home)
    log_from, exchanges_from = stack.log_size(), len(stack.recorder.exchanges)
    run = await run_agent([*command, prompt], env, work)
    assert run.returncode == 0, run.report()
    output = AGENTS[agent][1](run)
    assert output.streamed, run.report()
    exchanges = stack.recorder.model_requests(exchanges_from)
    assert exchanges, f"{agent} sent no request\n{run.report()}"
    assert all(exchange.body["stream"] is True for exchange in exchanges)
    texts = [streamed_text(agent, exchange) for exchange in exchanges]
    assert output.answer in texts, texts  # the answer came from the gateway's stream
    access = await stack.access_lines(log_from, at_least=len(exchanges))
    assert len(access) >= len(exchanges), access
    failed = [line for line in access if line["status"] >= 400]
    assert not failed, failed
    return output, exchanges


@pytest.mark.parametrize("agent", ["claude", "codex"])
async def test_agent_answers_text_through_the_mock(
    clis: Clis, stack: Stack, recordings: dict[str, Recording], agent: str, tmp_path: Path
) -> None:
    output, exchanges = await _run(clis, stack, agent, "mock", PROMPT_TEXT, tmp_path)
    assert output.answer == MOCK_TEXT
    first = next(e for e in exchanges if PROMPT_TEXT in json.dumps(e.body))
    recordings[agent].add("first", first, _replacements(tmp_path, MODELS["mock"]))


@pytest.mark.parametrize("kind", ["openai", "aichats"])
@pytest.mark.parametrize("agent", ["claude", "codex"])
async def test_agent_runs_a_command_and_answers_with_its_output(
    clis: Clis,
    stack: Stack,
    recordings: dict[str, Recording],
    agent: str,
    kind: str,
    tmp_path: Path,
) -> None:
    secret = f"note-{secrets.token_hex(6)}"
    tool, argument = TOOLS[agent]
    upstream: AgentUpstream = stack.openai if kind == "openai" else stack.aichats
    task = Task(tool, {argument: COMMAND}, secret)
    upstream.start(task)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "note.txt").write_text(secret + "\n")
    output, exchanges = await _run(clis, stack, agent, kind, PROMPT_TOOL, tmp_path)
    # The call the upstream made fits the tool as the agent declares it.
    declared = next(t for t in exchanges[0].body["tools"] if t.get("name") == tool)
    schema = declared.get("input_schema") or declared["parameters"]
    assert argument in schema["properties"] and argument in schema["required"], declared
    assert output.answer == task.final
    assert any(secret in text for text in output.command_outputs), output  # the agent ran it
    assert upstream.saw_secret(), upstream.requests[-1]  # and sent its output back
    # The model's thinking reached the agent as thinking, and did not go back as answer text.
    assert output.reasoning == THOUGHT
    assert THOUGHT not in json.dumps(upstream.requests[-1])
    if kind == "openai":
        follow_up = next(e for e in exchanges if secret in json.dumps(e.body))
        replacements = _replacements(tmp_path, MODELS[kind], secret)
        recordings[agent].add("tool_result", follow_up, replacements)


@pytest.mark.parametrize("kind", ["openai", "aichats"])
async def test_codex_routes_a_call_of_a_namespaced_tool(
    clis: Clis, stack: Stack, kind: str, tmp_path: Path
) -> None:
    """The Codex CLI declares its sub-agent tools in a namespace; the gateway flattens them
    for the upstream and must hand a call back with ``namespace`` set, or the CLI cannot
    route it. Only ``close_agent``'s own handler answers an id that is no agent's this way.
    """
    upstream: AgentUpstream = stack.openai if kind == "openai" else stack.aichats
    task = Task("multi_agent_v1__close_agent", {"target": "agent-x"}, "invalid agent id agent-x")
    upstream.start(task)
    output, exchanges = await _run(clis, stack, "codex", kind, "Close agent-x.", tmp_path)
    assert output.answer == task.final
    calls = [
        item
        for exchange in exchanges
        for item in exchange.body["input"]
        if item.get("type") == "function_call"
    ]
    assert calls and calls[0]["namespace"] == "multi_agent_v1", calls
    assert calls[0]["name"] == "close_agent"


# The upstream of each agent's own API: reached untranslated.
NATIVE = {"claude": "anthropic", "codex": "responses"}


@pytest.mark.parametrize("agent", ["claude", "codex"])
async def test_agent_reaches_an_upstream_of_its_own_api_untranslated(
    clis: Clis, stack: Stack, agent: str, tmp_path: Path
) -> None:
    """Claude Code to an ``anthropic`` route, Codex to a ``responses`` one: every request
    reaches the upstream as the agent sent it, byte for byte but for the model, and every
    answer reaches the agent as the upstream sent it, its model renamed; the tool round trip
    and the thinking work as with the agent's own provider."""
    kind = NATIVE[agent]
    upstream = stack.anthropic if kind == "anthropic" else stack.responses
    secret = f"note-{secrets.token_hex(6)}"
    tool, argument = TOOLS[agent]
    task = Task(tool, {argument: COMMAND}, secret)
    upstream.start(task)
    requests_from, sent_from = len(upstream.raw_requests), len(upstream.sent)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "note.txt").write_text(secret + "\n")
    output, exchanges = await _run(clis, stack, agent, kind, PROMPT_TOOL, tmp_path)
    assert output.answer == task.final
    assert any(secret in text for text in output.command_outputs), output
    assert upstream.saw_secret() and output.reasoning == THOUGHT
    client, model = MODELS[kind].encode(), UPSTREAM_MODELS[kind].encode()
    sent_as = [
        e.raw.replace(b'"model":"' + client + b'"', b'"model":"' + model + b'"', 1)
        for e in exchanges
    ]
    assert sorted(sent_as) == sorted(upstream.raw_requests[requests_from:])
    came_back = [
        s.replace(b'"model": "' + model + b'"', b'"model":"' + client + b'"')
        for s in upstream.sent[sent_from:]
    ]
    assert sorted(e.response for e in exchanges) == sorted(came_back)
    if agent == "claude":  # Anthropic checks the signed thinking it gets back with a tool result
        follow_up = next(
            raw for raw in upstream.raw_requests[requests_from:] if secret.encode() in raw
        )
        assert SIGNATURE.encode() in follow_up
