"""The requests Claude Code and the Codex CLI really send, replayed without the CLIs.

``vectors/agent_*.json`` hold, per agent, its first request of a session and the request
that carries a command's output back (recorded by ``tests/agents``; how to record them again
is at the top of ``tests/agents/test_agents.py``). Each is replayed, headers and body as the
agent sent them, against every provider kind: the mock, an OpenAI-compatible upstream and
aichats with emulated tools. The upstreams are the scripted ones of the slow agent tests: a
first request gets some reasoning and the recorded task's tool call back, the follow-up (which
carries that reasoning back too) gets the final answer, which is only given when the command's
output reached the upstream. Every stream must be complete and well formed, field by field,
and what no upstream can do with these requests must be named in ``x-aichat-dropped-params``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pytest_aiohttp import AiohttpServer

from aichat.core.config import ModelConfig
from tests.agents.upstream import THOUGHT, AgentAichats, AgentOpenAI, AgentUpstream, Task
from tests.conformance.checks import READERS, VECTORS, Outcome, check_fields, parse_sse
from tests.conftest import API_KEY, Gateway, GatewayFactory

MOCK_TEXT = "Hello from the mock."
PROVIDERS = ("mock", "openai", "aichats")
# Each API's own way to send the key, and how its stream ends well.
AUTH: dict[str, Callable[[str], dict[str, str]]] = {
    "messages": lambda key: {"x-api-key": key},
    "responses": lambda key: {"authorization": f"Bearer {key}"},
}
LAST_EVENT = {"messages": "message_stop", "responses": "response.completed"}
TOOL_ENDING = {"messages": "tool_use", "responses": "completed"}
TEXT_ENDING = {"messages": "end_turn", "responses": "completed"}
# What no upstream kind can do with these agents' requests: dropped, and said so.
EXPECT_DROPPED = {
    "@anthropic-ai/claude-code": {"context_management"},
    "@openai/codex": {"tools.web_search", "include", "client_metadata"},
}


def _reasoning(events: list[tuple[str, Any]]) -> str:
    """The reasoning text of a Messages or Responses stream (thinking, reasoning summary)."""
    pieces = []
    for name, data in events:
        if name == "response.reasoning_summary_text.delta":
            pieces.append(data["delta"])
        elif name == "content_block_delta" and data["delta"]["type"] == "thinking_delta":
            pieces.append(data["delta"]["thinking"])
    return "".join(pieces)


def _function_names(tools: list[dict[str, Any]]) -> list[str]:
    """The function tools an OpenAI-compatible upstream should get for ``tools``.

    Anthropic tools and Responses function tools keep their names, a namespace's tools are
    named ``<namespace>__<name>``, hosted tools are left out.
    """
    names = []
    for tool in tools:
        kind = tool.get("type", "custom")
        if kind == "namespace":
            names += [f"{tool['name']}__{child['name']}" for child in tool["tools"]]
        elif kind in ("custom", "function"):
            names.append(tool["name"])
    return sorted(names)


def _cases() -> list[Any]:
    params = []
    for path in sorted(VECTORS.glob("agent_*.json")):
        doc = json.loads(path.read_text())
        for request in doc["requests"]:
            for provider in PROVIDERS:
                name = f"{path.stem}-{request['name']}-{provider}"
                params.append(pytest.param(doc, request, provider, id=name))
    return params


@dataclass
class Upstreams:
    """The gateway and the scripted upstreams behind its models."""

    gateway: Gateway
    fakes: dict[str, AgentUpstream]


@pytest.fixture
async def upstreams(make_gateway: GatewayFactory, aiohttp_server: AiohttpServer) -> Upstreams:
    """A gateway with one model per provider kind, named after it."""
    openai, aichats = AgentOpenAI(), AgentAichats()
    openai_url = (await aiohttp_server(openai.app())).make_url("/v1")
    aichats_url = (await aiohttp_server(aichats.app())).make_url("")
    routes = (
        ModelConfig(name="mock", provider="mock", text=MOCK_TEXT),
        ModelConfig(name="openai", provider="openai", base_url=str(openai_url)),
        ModelConfig(
            name="aichats",
            provider="aichats",
            base_url=str(aichats_url).rstrip("/"),
            emulate_tools=True,
        ),
    )
    gateway = await make_gateway(routes=routes, retries=0)
    return Upstreams(gateway, {"openai": openai, "aichats": aichats})


@pytest.mark.parametrize(("doc", "request_", "provider"), _cases())
async def test_recorded_agent_request_gets_a_complete_answer(
    upstreams: Upstreams, doc: dict[str, Any], request_: dict[str, Any], provider: str
) -> None:
    api = doc["api"]
    task = Task(**doc["task"])
    fake = upstreams.fakes.get(provider)
    if fake is not None:
        fake.start(task)
    gateway = upstreams.gateway
    body = {**request_["body"], "model": provider}
    headers = {**request_["headers"], **AUTH[api](API_KEY)}
    async with gateway.http.post(
        gateway.url + request_["path"], data=json.dumps(body), headers=headers
    ) as resp:
        raw = await resp.read()
        assert resp.status == 200, raw[:2000]
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        dropped = resp.headers.get("x-aichat-dropped-params", "")
    events = parse_sse(raw, named=True)
    for name, data in events:
        check_fields(api, name, data, table="events")
    assert events[-1][0] == LAST_EVENT[api], events[-1]
    outcome = Outcome()
    READERS[api][1](outcome, [data for _, data in events])
    assert not outcome.stream_error
    assert EXPECT_DROPPED[doc["agent"]] <= set(dropped.split(",")), dropped
    if fake is None:
        assert (outcome.text, outcome.tool) == (MOCK_TEXT, None)
        assert outcome.ending == TEXT_ENDING[api]
    elif request_["name"] == "first":
        assert outcome.tool == {"name": task.tool, "arguments": task.arguments}
        assert outcome.ending == TOOL_ENDING[api]
        assert not fake.saw_secret()
        assert _reasoning(events) == THOUGHT  # as thinking, not as answer text
        assert THOUGHT not in outcome.text
    else:
        assert fake.saw_secret(), fake.requests[-1]  # the command's output reached the upstream
        assert outcome.text == task.final
        assert outcome.tool is None
        assert outcome.ending == TEXT_ENDING[api]
    if provider == "openai":
        sent = [t["function"]["name"] for t in fake.requests[-1]["tools"]]
        assert sorted(sent) == _function_names(request_["body"]["tools"])
