"""Every inbound API through each upstream API llama.cpp serves: a Chat Completions route, a
Responses route (``api = "responses"``) and a Messages route (``provider = "anthropic"``).

Cached tokens: the same prompt of about 256 tokens sent twice reaches each client, whole and
streamed, with the counts llama.cpp reported for that very request (a recorder between the
gateway and llama.cpp keeps each answer), and ``aichat_tokens_total`` counts them as cache
reads. Context overflow: a second llama.cpp with a small window refuses a long prompt in its
own words; each client is told in its API's canonical form, and a route's
``context_fallbacks`` model (the first llama.cpp, with the larger window) answers instead.
The second llama.cpp names its model by an alias, which discovery serves it by.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from aichat.core.config import ModelConfig
from tests.agents.recorder import Exchange, Recorder
from tests.conftest import Gateway, GatewayFactory
from tests.deploy.procs import free_port
from tests.llama.clients import HEADERS, PATHS, ask, post, read, request, usage
from tests.llama.serve import Settings
from tests.llama.server import Llama, model_file, serving

pytestmark = [pytest.mark.slow, pytest.mark.llama]

TIGHT = 256  # tokens of the small llama.cpp's one slot
ALIAS = "tiny-smol"  # the small llama.cpp's name for its model (--alias)
SEA = "Tell me about the sea and the sky. " * 26  # about 256 tokens with the chat template


def routes(base: str, name: str, **extra: Any) -> tuple[ModelConfig, ...]:
    """``{name}-chat``, ``{name}-responses`` and ``{name}-messages``: llama.cpp at ``base``
    (without /v1) through each of its APIs."""
    return (
        ModelConfig(name=f"{name}-chat", provider="openai", base_url=f"{base}/v1", **extra),
        ModelConfig(
            name=f"{name}-responses",
            provider="openai",
            base_url=f"{base}/v1",
            api="responses",
            **extra,
        ),
        ModelConfig(name=f"{name}-messages", provider="anthropic", base_url=base, **extra),
    )


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, recorded: tuple[Recorder, str]) -> Gateway:
    """llama.cpp through the recorder, by each of its APIs."""
    return await make_gateway(routes=routes(recorded[1], "via"))


def counts(api: str, found: dict[str, Any]) -> tuple[int, int, int]:
    """(prompt, cached, completion) of a usage object of ``api``; prompt includes the cached."""
    if api == "chat":
        cached = (found.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return found["prompt_tokens"], cached, found["completion_tokens"]
    if api == "responses":
        cached = (found.get("input_tokens_details") or {}).get("cached_tokens") or 0
        return found["input_tokens"], cached, found["output_tokens"]
    read = found.get("cache_read_input_tokens") or 0
    written = found.get("cache_creation_input_tokens") or 0
    return found["input_tokens"] + read + written, read, found["output_tokens"]


def own(exchange: Exchange, upstream: str, stream: bool) -> tuple[int, int, int]:
    """What llama.cpp reported for ``exchange``."""
    assert exchange.path == PATHS[upstream] and exchange.status == 200
    return counts(upstream, usage(upstream, stream, exchange.response))


async def cache_reads(gateway: Gateway) -> float:
    """``aichat_tokens_total`` of kind ``cache_read``, summed."""
    text = await (await gateway.http.get(f"{gateway.url}/metrics")).text()
    found = re.findall(r'^aichat_tokens_total\{[^}]*kind="cache_read"[^}]*\} (\S+)$', text, re.M)
    return sum(float(value) for value in found)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", list(PATHS))
@pytest.mark.parametrize("route_api", list(PATHS))
async def test_the_same_prompt_twice_shows_llamacpp_s_cached_tokens_on_every_api(
    gateway: Gateway, recorder: Recorder, route_api: str, api: str, stream: bool
) -> None:
    # Every test sends the same prompt: the first request of the run reads little of it from
    # the cache, every later one all but its last token. What matters is that each client is
    # told what llama.cpp reported.
    body = request(api, f"via-{route_api}", SEA, stream)
    told = []
    for _ in range(2):
        # llama.cpp's own Responses stream, passed on as it came, numbers no event.
        passed_on = api == route_api == "responses" and stream
        outcome, found = await ask(gateway, api, body, numbered=not passed_on)
        assert outcome.text.strip(), outcome
        told.append(counts(api, found))
    reported = [own(exchange, route_api, stream) for exchange in recorder.exchanges]
    assert told == reported
    prompt, cached, completion = reported[1]
    assert prompt > 240 and cached >= prompt - 2 and completion == 4
    assert await cache_reads(gateway) == sum(cached for _, cached, _ in reported)


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Llama]:
    """A second llama.cpp, of one slot of ``TIGHT`` tokens, calling its model ``ALIAS``."""
    settings = Settings(str(model_file()), free_port(), TIGHT, 1, 16, alias=ALIAS)
    with serving(settings, tmp_path_factory.mktemp("tight") / "server.log") as server:
        yield server


@pytest.fixture
async def tight_gateway(make_gateway: GatewayFactory, tight: Llama, llama: Llama) -> Gateway:
    """The small llama.cpp by each API, alone and with the large one as context fallback."""
    larger = ModelConfig(name="roomy", provider="openai", base_url=f"{llama.url}/v1")
    alone = routes(tight.url, "tight")
    fallen = routes(tight.url, "fit", context_fallbacks=("roomy",))
    return await make_gateway(routes=(larger, *alone, *fallen))


async def test_a_discovered_model_with_an_alias_is_served_by_it_with_its_window(
    make_gateway: GatewayFactory, tight: Llama
) -> None:
    route = ModelConfig(
        name="small", provider="openai", base_url=f"{tight.url}/v1", models="discover"
    )
    gateway = await make_gateway(routes=(route,))
    listed = await gateway.http.get(f"{gateway.url}/v1/models", headers=HEADERS)
    models = {model["id"]: model for model in (await listed.json())["data"]}
    assert models[ALIAS]["context_window"] == TIGHT, models
    outcome, _ = await ask(gateway, "chat", request("chat", ALIAS, "Hi", stream=False))
    assert outcome.text.strip(), outcome


LONG = "Tell me about the sea and the sky. " * 40  # about 380 tokens: more than TIGHT


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", list(PATHS))
@pytest.mark.parametrize("route_api", list(PATHS))
async def test_a_prompt_too_long_for_llamacpp_is_each_client_s_own_overflow(
    tight_gateway: Gateway, route_api: str, api: str, stream: bool
) -> None:
    status, raw, _ = await post(
        tight_gateway, api, request(api, f"tight-{route_api}", LONG, stream)
    )
    assert status == 400
    error = json.loads(raw)
    if api == "messages":
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        found = re.fullmatch(
            r"prompt is too long: (\d+) tokens > (\d+) maximum", error["error"]["message"]
        )
        assert found is not None, error
        assert int(found[1]) > TIGHT and int(found[2]) == TIGHT
        return
    details = error["error"]
    assert (details["type"], details["code"]) == (
        "invalid_request_error",
        "context_length_exceeded",
    )
    found = re.fullmatch(
        r"This model's maximum context length is (\d+) tokens\. However, your messages "
        r"resulted in (\d+) tokens\. Please reduce the length of the messages\.",
        details["message"],
    )
    assert found is not None, details
    assert int(found[1]) == TIGHT and int(found[2]) > TIGHT


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", list(PATHS))
@pytest.mark.parametrize("route_api", list(PATHS))
async def test_a_context_fallback_with_a_larger_window_answers_instead(
    tight_gateway: Gateway, route_api: str, api: str, stream: bool
) -> None:
    status, raw, headers = await post(
        tight_gateway, api, request(api, f"fit-{route_api}", LONG, stream)
    )
    assert status == 200, raw[-2000:]
    assert headers["x-aichat-upstream"] == "roomy (openai)"
    outcome, told = read(api, stream, raw)
    assert outcome.text.strip(), outcome
    assert counts(api, told)[0] > TIGHT  # the whole prompt, read by the larger model
