"""The recorded coding-agent requests as benchmark scenarios: big bodies, untranslated or not.

Claude Code speaks Anthropic Messages and the Codex CLI the Responses API; their requests
(``tests/conformance/vectors/agent_*.json``, recorded by ``tests/agents``) are 40-50 KB
each, most of it tool definitions, a system prompt and the conversation so far. Each agent
is measured on two routes of one gateway:

- ``*-native``: an upstream speaking the agent's own API (an ``anthropic`` route, an
  ``openai`` route with ``api = "responses"``), where aichat forwards the body untranslated;
- ``*-chat``: a Chat Completions upstream, where aichat translates the request and the
  answer.

The request replayed is each recording's second (``tool_result``): a turn in the middle of
a session, with a tool call and its result in the conversation. It is sent with the
agent's recorded headers (``anthropic-beta`` and all), its ``model`` set to the route's
name and ``stream`` as the mode asks. Answers have the benchmark's usual 20 marked pieces
(the fake upstream's defaults: these scenarios need no pacing or holding).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).parent.parent / "tests" / "conformance" / "vectors"
RECORDING = "tool_result"
# Headers the load generator writes itself, or that would only repeat the placeholder model.
_SKIPPED_HEADERS = frozenset({"host", "content-length", "x-codex-turn-metadata"})


@dataclass(frozen=True)
class AgentScenario:
    """One agent's requests on one kind of route."""

    name: str
    fixture: str  # the recording's file name in ``VECTORS``, without ``.json``
    api: str  # the agent's API, and the fake upstream's path for it
    route: str  # the gateway model (route) the requests ask for
    translated: bool

    @property
    def path(self) -> str:
        """The API's path, at the gateway and at the fake upstream alike."""
        return f"/v1/{self.api}"


ANTHROPIC_ROUTE = "bench-anthropic"
RESPONSES_ROUTE = "bench-responses"
CHAT_ROUTE = "bench-openai"  # the small-request scenarios' OpenAI route
AGENTS = {
    scenario.name: scenario
    for scenario in (
        AgentScenario("messages-native", "agent_claude_code", "messages", ANTHROPIC_ROUTE, False),
        AgentScenario("messages-chat", "agent_claude_code", "messages", CHAT_ROUTE, True),
        AgentScenario("responses-native", "agent_codex", "responses", RESPONSES_ROUTE, False),
        AgentScenario("responses-chat", "agent_codex", "responses", CHAT_ROUTE, True),
    )
}


@cache
def _recording(fixture: str) -> dict[str, Any]:
    doc = json.loads((VECTORS / f"{fixture}.json").read_text())
    found: dict[str, Any] = next(r for r in doc["requests"] if r["name"] == RECORDING)
    return found


def agent_headers(scenario: AgentScenario) -> dict[str, str]:
    """The agent's recorded request headers, but those the load generator sets itself."""
    headers = _recording(scenario.fixture)["headers"]
    return {name: value for name, value in headers.items() if name not in _SKIPPED_HEADERS}


def agent_body(scenario: AgentScenario, model: str, stream: bool) -> str:
    """The recorded request for ``model``, streamed or not, as compact JSON (as agents send)."""
    body = {**_recording(scenario.fixture)["body"], "model": model, "stream": stream}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
