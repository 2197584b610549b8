"""Every inbound API through aichat to llama.cpp, the real upstream, on an ``openai`` route.

The gateway runs in the test's process; between it and llama.cpp a recorder keeps each
answer llama.cpp sent (``tests/agents/recorder.py``), so the usage a client gets is compared
with the usage llama.cpp itself reported for that very request. Answers are a few tokens
long: the point is the traffic, not the prose of a 135M-parameter model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from typing import Any

import pytest

from aichat.core.config import ModelConfig
from tests.agents.recorder import Exchange, Recorder
from tests.conformance.checks import parse_sse
from tests.conftest import Gateway, GatewayFactory
from tests.llama.clients import HEADERS, PATHS, ask, request
from tests.llama.server import SLOT_CONTEXT, SLOTS, Llama

pytestmark = [pytest.mark.slow, pytest.mark.llama]


@pytest.fixture
async def gateway(
    make_gateway: GatewayFactory, llama: Llama, recorded: tuple[Recorder, str]
) -> Gateway:
    """``smol`` through the recorder, ``smol-direct`` straight to llama.cpp, and what
    llama.cpp lists as ``local/...``, through the recorder."""
    routes = (
        ModelConfig(name="smol", provider="openai", base_url=f"{recorded[1]}/v1"),
        ModelConfig(name="smol-direct", provider="openai", base_url=f"{llama.url}/v1"),
        ModelConfig(
            name="local",
            provider="openai",
            base_url=f"{recorded[1]}/v1",
            models="discover",
            prefix="local/",
        ),
    )
    return await make_gateway(routes=routes)


def reported(exchange: Exchange) -> dict[str, Any]:
    """The usage llama.cpp reported in one answer (Chat Completions, whole or streamed)."""
    if exchange.response_headers["Content-Type"].startswith("text/event-stream"):
        chunks = [data for _, data in parse_sse(exchange.response, named=False) if data]
        (usage,) = [chunk["usage"] for chunk in chunks if chunk.get("usage")]
        return dict(usage)
    found: dict[str, Any] = json.loads(exchange.response)["usage"]
    return found


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
async def test_every_api_answers_with_the_usage_llamacpp_reported(
    gateway: Gateway, recorder: Recorder, api: str, stream: bool
) -> None:
    body = request(api, "smol", f"{secrets.token_hex(4)} Say hi.", stream)
    outcome, usage = await ask(gateway, api, body)
    assert outcome.text.strip(), outcome
    assert outcome.ending in {"length", "max_tokens", "completed", "incomplete"}, outcome
    (exchange,) = [e for e in recorder.exchanges if e.path == "/v1/chat/completions"]
    assert exchange.body["model"] == "smol" and exchange.status == 200
    own = reported(exchange)
    prompt, completion = own["prompt_tokens"], own["completion_tokens"]
    assert completion == 4
    if api == "chat":
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, completion)
        assert usage["total_tokens"] == prompt + completion
    elif api == "responses":
        assert (usage["input_tokens"], usage["output_tokens"]) == (prompt, completion)
        assert usage["total_tokens"] == prompt + completion
    else:  # Anthropic's input_tokens leave out what was read from the cache
        read = usage.get("cache_read_input_tokens") or 0
        assert (usage["input_tokens"] + read, usage["output_tokens"]) == (prompt, completion)


async def test_the_listed_model_is_named_by_its_file_and_told_with_a_slots_window(
    gateway: Gateway, recorder: Recorder, llama: Llama
) -> None:
    listed = await gateway.http.get(f"{gateway.url}/v1/models", headers=HEADERS)
    models = {model["id"]: model for model in (await listed.json())["data"]}
    name = f"local/{llama.model.name.removesuffix('.gguf')}"
    assert name == "local/SmolLM2-135M-Instruct.Q4_1"
    assert models[name]["context_window"] == SLOT_CONTEXT
    assert "context_window" not in models["smol"]  # an explicit route says nothing unasked
    outcome, _ = await ask(gateway, "chat", request("chat", name, "Hi", stream=False))
    assert outcome.text, outcome
    (sent,) = [e for e in recorder.exchanges if e.path == "/v1/chat/completions"]
    assert sent.body["model"] == llama.model_id  # the id llama.cpp knows


async def test_streams_and_whole_answers_take_turns_on_the_connection_pool(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    """llama.cpp closes a connection after a stream: no request may fail, or be retried, for
    landing on it."""
    caplog.set_level(logging.INFO, "aichat.access")
    for stream in (True, False, True, False):
        outcome, _ = await ask(gateway, "chat", request("chat", "smol-direct", "Hi", stream))
        assert outcome.text, outcome
    lines = [getattr(r, "fields", {}) for r in caplog.records if r.name == "aichat.access"]
    assert [line["attempts"] for line in lines] == [1, 1, 1, 1], lines


async def test_a_client_leaving_mid_stream_frees_the_slot(gateway: Gateway, llama: Llama) -> None:
    predicted = re.compile(rb"^llamacpp:tokens_predicted_total (\d+)", re.M)

    def tokens_predicted() -> int:
        found = predicted.search(llama.raw("/metrics"))
        assert found is not None
        return int(found[1])

    before = tokens_predicted()
    body = request("chat", "smol-direct", "Count from one to a thousand.", True, max_tokens=400)
    answer = await gateway.http.post(gateway.url + PATHS["chat"], json=body, headers=HEADERS)
    assert answer.status == 200
    await answer.content.readline()  # the answer has begun
    assert llama.busy_slots() == 1
    answer.close()  # the client leaves
    for _ in range(100):  # 10 s at most; the whole answer would take far longer
        if llama.busy_slots() == 0:
            break
        await asyncio.sleep(0.1)
    assert llama.busy_slots() == 0
    assert tokens_predicted() - before < 400  # stopped, not run to its end


async def test_more_concurrent_streams_than_slots_all_complete(gateway: Gateway) -> None:
    streams = 2 * SLOTS
    bodies = [request("chat", "smol-direct", f"Say {n}.", True) for n in range(streams)]
    answers = await asyncio.gather(*(ask(gateway, "chat", body) for body in bodies))
    assert [outcome.ending for outcome, _ in answers] == ["length"] * streams
