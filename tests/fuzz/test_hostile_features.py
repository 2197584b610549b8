"""Hostile input to the features of the third review: namespace tools, budgets, usage
metering, discovery, reasoning. Each attack gets a bounded, honest answer, and the gateway
stays responsive: time is measured in CPU seconds of this process (the gateway runs in it),
with margins of ten and more over what the code needs.
"""

from __future__ import annotations

import json
import time

from aichat.core.config import ModelConfig
from tests.conftest import API_KEY, GatewayFactory
from tests.fuzz.wire import exchange, http_request, openai_error

AUTH = (b"Authorization", f"Bearer {API_KEY}".encode())
JSON = (b"Content-Type", b"application/json")
ROUTES = (ModelConfig(name="gpt-4o", provider="mock"),)


def responses(body: dict[str, object]) -> bytes:
    """A Responses API request with the test key."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return http_request("POST", "/v1/responses", data, [AUTH, JSON])


async def test_namespace_tools_of_one_name_are_flattened_in_linear_time(
    make_gateway: GatewayFactory,
) -> None:
    # 6,000 tools flattening to one name froze the gateway for 61 s (each tried every
    # suffix taken before it); a model that does not exist did not help.
    gateway = await make_gateway(routes=ROUTES)
    tool = {"type": "function", "name": "run", "parameters": {"type": "object"}}
    spaces = [{"type": "namespace", "name": "ns", "tools": [tool] * 3_000}] * 2
    cpu = time.process_time()
    for model in ("gpt-4o", "no-such-model"):
        answer = await exchange(
            gateway.url, responses({"model": model, "input": "hi", "tools": spaces})
        )
        if model == "gpt-4o":
            assert answer.status == 200, answer.body[:300]
        else:
            assert openai_error(answer, 404)["code"] == "model_not_found"
    assert time.process_time() - cpu < 3, "flattening namespace tools took seconds of CPU"
