"""What is measured: the requests of each scenario and the phases run against each target.

A scenario is a provider (``aichats`` translation, ``openai`` pass-through) and a mode
(stream or whole answer). Each scenario is measured against the fake upstream directly and
through each gateway, with the same phases:

- ``ttft_c1``: one request at a time, fast upstream: time to first token.
- ``gap_c1``: one at a time, upstream pacing its chunks: the gaps between tokens (stream only).
- ``rps_c16`` / ``rps_c64``: fixed request counts at concurrency 16 and 64: throughput, CPU
  and peak memory of the server.
- ``hold``: 1,000 streams held open and idle: memory per open stream (stream only).

The coding agents' scenarios (``bench.agents``: 40-50 KB requests, untranslated or
translated) are there for CPU per request: they run ``ttft_c1`` and ``rps_c16`` alone, with
a third of the requests (each costs several times a small one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bench.agents import AGENTS, agent_body, agent_headers
from bench.answer import Shape
from bench.gateways import AICHATS_MODEL, CLIENT_KEY, OPENAI_MODEL, UPSTREAM_KEY, UPSTREAM_MODEL

SMALL = ("aichats", "openai")
PROVIDERS = (*SMALL, *AGENTS)  # the scenarios' first word: small requests', then agents'
AGENT_SHARE = 3  # agent scenarios run 1/AGENT_SHARE of the requests of a small one
CHUNKS = 20
PACE_MS = 2.0
_DONE = "data: [DONE]\n\n"


@dataclass(frozen=True)
class Suite:
    """Request counts and time bounds of one benchmark run."""

    name: str
    ttft_requests: int
    gap_requests: int
    load_requests: int
    hold_streams: int
    max_seconds: float  # per phase: a slow target is measured on what it did in that time
    rounds: int  # each target's phases are run this many times; the best round counts

    def phases(
        self, stream: bool, body_for: Any, throughput_only: bool = False, agent: bool = False
    ) -> list[dict[str, Any]]:
        """The load phases of one scenario; ``body_for(shape)`` builds a request body.

        ``throughput_only``: the ``rps_*`` phases alone (the workers scenario); ``agent``:
        the agent scenarios' two.
        """
        fast = body_for(Shape(CHUNKS))
        phases = []
        if agent:
            phases.append(self._load("ttft_c1", 1, self.ttft_requests // AGENT_SHARE, fast))
            phases.append(self._load("rps_c16", 16, self.load_requests // AGENT_SHARE, fast))
            return phases
        if not throughput_only:
            phases.append(self._load("ttft_c1", 1, self.ttft_requests, fast))
            if stream:
                paced = body_for(Shape(CHUNKS, pace_ms=PACE_MS))
                phases.append(self._load("gap_c1", 1, self.gap_requests, paced))
        phases.append(self._load("rps_c16", 16, self.load_requests, fast))
        phases.append(self._load("rps_c64", 64, self.load_requests, fast))
        return phases

    def hold_phase(self, body_for: Any) -> dict[str, Any]:
        """Streams held open after their first token, until the load generator lets go."""
        body = body_for(Shape(CHUNKS, hold_s=self.max_seconds + 30))
        return {
            "name": "hold",
            "kind": "hold",
            "streams": self.hold_streams,
            "max_seconds": self.max_seconds + 10,
            "body": body,
            "warmup_body": body_for(Shape(CHUNKS)),
        }

    def _load(self, name: str, concurrency: int, requests: int, body: str) -> dict[str, Any]:
        return {
            "name": name,
            "concurrency": concurrency,
            "requests": requests,
            "max_seconds": self.max_seconds,
            "body": body,
        }


FULL = Suite("full", ttft_requests=600, gap_requests=30, load_requests=3000,
             hold_streams=1000, max_seconds=8, rounds=2)  # fmt: skip
QUICK = Suite("quick", ttft_requests=200, gap_requests=12, load_requests=600,
              hold_streams=200, max_seconds=4, rounds=1)  # fmt: skip
SUITES = {suite.name: suite for suite in (FULL, QUICK)}


def _openai_body(model: str, stream: bool, shape: Shape) -> str:
    messages = [{"role": "user", "content": shape.directive()}]
    return json.dumps({"model": model, "stream": stream, "messages": messages})


def request_target(
    provider: str, stream: bool, base_url: str, direct: bool
) -> tuple[dict[str, Any], Any]:
    """The loadgen target fields and a ``body_for(shape)`` for one scenario and target.

    ``direct`` requests go to the fake upstream in its own protocol; the others to a
    gateway's ``/v1/chat/completions``. The aichats protocol has no whole answers: its
    direct baseline is always the stream. An agent's scenario sends its recorded request in
    its own API, to the gateway and directly alike; its ``body_for`` ignores the shape.
    """
    json_headers = {"Content-Type": "application/json"}
    agent = AGENTS.get(provider)
    if agent is not None:
        body = agent_body(agent, UPSTREAM_MODEL if direct else agent.route, stream)
        key = UPSTREAM_KEY if direct else CLIENT_KEY
        headers = {**agent_headers(agent), "Authorization": f"Bearer {key}"}
        end = "\n\n" if stream else "}"
        return {"url": base_url + agent.path, "headers": headers, "end": end}, lambda _: body
    if direct and provider == "aichats":

        def aichats_body(shape: Shape) -> str:
            history = [{"from": "you", "content": shape.directive()}]
            return json.dumps({"type": "chat", "messagesHistory": history})

        return {"url": f"{base_url}/chat/send2/", "headers": json_headers, "end": ""}, aichats_body
    key = UPSTREAM_KEY if direct else CLIENT_KEY
    gateway_model = AICHATS_MODEL if provider == "aichats" else OPENAI_MODEL
    model = UPSTREAM_MODEL if direct else gateway_model
    fields = {
        "url": f"{base_url}/v1/chat/completions",
        "headers": {**json_headers, "Authorization": f"Bearer {key}"},
        "end": _DONE if stream else "}",
    }
    return fields, lambda shape: _openai_body(model, stream, shape)
