"""Every vector in ``vectors/`` against every provider, with failures before and after the start.

A vector file names a client (an official SDK, or ``raw`` HTTP with exact field checks) and
an API, and lists cases: sync or async, streamed or whole, a scenario from ``scenarios.json``
and what the client must see. Adding a client is adding a file (and, for a new SDK, a few
lines in ``clients.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.checks import VECTORS, load, matches
from tests.conformance.clients import request_body, run_raw, run_sdk
from tests.conformance.conftest import PROVIDERS, Upstreams


def _cases() -> list[Any]:
    params = []
    for path in sorted(VECTORS.glob("*.json")):
        doc = load(path.stem)
        for case in doc.get("cases", ()):
            for provider in PROVIDERS:
                form = "stream" if case["stream"] else "whole"
                name = f"{path.stem}-{provider}-{case['mode']}-{form}-{case['scenario']}"
                params.append(pytest.param(doc["client"], doc["api"], provider, case, id=name))
    return params


@pytest.mark.parametrize(("client", "api", "provider", "case"), _cases())
async def test_vector(
    upstreams: Upstreams, client: str, api: str, provider: str, case: dict[str, Any]
) -> None:
    scenario, expect = case["scenario"], case["expect"]
    model = upstreams.prepare(provider, scenario)
    body = request_body(api, model, scenario, case["stream"])
    gateway = upstreams.gateway
    if client == "raw":
        outcome = await run_raw(gateway, api, body)
    else:
        outcome = await run_sdk(gateway, api, case["mode"], body)
    if expect["outcome"] == "answer":
        assert outcome.status == 200
        assert not outcome.stream_error
        answer = load("scenarios")[scenario]["answer"]
        assert outcome.text == answer.get("text", "")
        assert outcome.tool == answer.get("tool")
        assert outcome.ending == expect["ending"]
    elif expect["outcome"] == "http_error":
        assert 500 <= outcome.status < 600
    else:
        assert outcome.status == 200
        assert outcome.stream_error
        assert outcome.ending is None  # never a success ending after a failure
    if "events" in expect:
        assert matches(outcome.events, expect["events"]), outcome.events
