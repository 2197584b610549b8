"""Providers, routing, retries and fallbacks, through the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from aichat.core.config import ModelConfig, load_settings
from aichat.providers import openai as openai_provider
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.deploy.procs import free_port
from tests.fakes import TOOL_CALL_CHUNKS, FakeAichats, FakeOpenAI, json_events, sse_events

HELLO = [{"role": "user", "content": "Say hello"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def up(openai_upstream: tuple[FakeOpenAI, str]) -> FakeOpenAI:
    return openai_upstream[0]


@pytest.fixture
async def routed(
    make_gateway: GatewayFactory,
    upstream: tuple[FakeAichats, str],
    openai_upstream: tuple[FakeOpenAI, str],
) -> Gateway:
    """aichats with an OpenAI-compatible fallback, the upstream itself, and a mock."""
    routes = (
        ModelConfig(name="gpt-4o", provider="aichats", fallbacks=("local-llama",)),
        ModelConfig(
            name="local-llama",
            provider="openai",
            base_url=openai_upstream[1],
            upstream_model="llama3.1",
            api_key="sk-upstream-secret",  # type: ignore[arg-type]
        ),
        ModelConfig(name="echo", provider="mock"),
        ModelConfig(
            name="slow", provider="mock", text="one two three four five", tokens_per_second=20
        ),
    )
    return await make_gateway(routes=routes, retries=1, retry_backoff=0.01)


async def test_each_provider_answers_through_the_sdk(
    routed: Gateway, fake: FakeAichats, up: FakeOpenAI
) -> None:
    async with routed.sdk() as client:
        aichats = await client.chat.completions.create(model="gpt-4o", messages=HELLO)
        llama = await client.chat.completions.create(model="local-llama", messages=HELLO)
        echo = await client.chat.completions.create(model="echo", messages=HELLO)
        models = [m.id async for m in client.models.list()]
    assert aichats.choices[0].message.content == "Hello, world!"
    assert llama.choices[0].message.content == "Hi from upstream"
    assert llama.model == "local-llama"  # the name the client asked for, not the upstream's
    assert llama.usage is not None
    assert llama.usage.total_tokens == 10  # the upstream's own count, passed on
    assert echo.choices[0].message.content == "Say hello"
    assert echo.usage is not None
    assert echo.usage.completion_tokens == 2
    assert models == ["gpt-4o", "local-llama", "echo", "slow"]
    assert up.requests[0]["model"] == "llama3.1"
    assert up.headers[0]["Authorization"] == "Bearer sk-upstream-secret"


async def test_parameters_and_unknown_fields_pass_through(routed: Gateway, up: FakeOpenAI) -> None:
    params: dict[str, Any] = {
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 50,
        "max_completion_tokens": 60,
        "stop": ["\n\n", "END"],
        "seed": 42,
        "n": 1,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "top_logprobs": 2,
        "user": "user-1234",
        "presence_penalty": 0.1,
        "metadata": {"trace": "x"},
    }
    async with routed.sdk() as client:
        await client.chat.completions.create(
            model="local-llama",
            messages=HELLO,
            extra_body={"vendor_knob": {"deep": [1, 2]}},
            **params,
        )
    sent = up.requests[0]
    assert sent["model"] == "llama3.1"
    assert sent["messages"] == HELLO
    assert sent["vendor_knob"] == {"deep": [1, 2]}
    for key, value in params.items():
        assert sent[key] == value, key


async def test_integers_past_64_bits_reach_the_upstream_exactly(
    routed: Gateway, up: FakeOpenAI
) -> None:
    big = {"seed": 2**64 + 1, "x_trace": [-(2**63) - 1, 10**30]}
    body = {"model": "local-llama", "messages": HELLO, **big}
    resp = await routed.post_chat(body)
    assert resp.status == 200, await resp.text()
    assert {key: up.requests[-1][key] for key in big} == big


async def test_streamed_tool_call_reaches_client_exactly(routed: Gateway, up: FakeOpenAI) -> None:
    up.tool_calls = True
    body = {"model": "local-llama", "messages": HELLO, "tools": TOOLS, "stream": True}
    raw = await (await routed.post_chat(body)).read()
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    forwarded = [json.loads(e) for e in events[:-1]]
    # The gateway asked for usage (to count tokens); this client did not, so it is kept back.
    *originals, usage = [json.loads(p) for p in up.sent]
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 10
    assert [{**c, "model": "llama3.1"} for c in forwarded] == originals
    assert [c["choices"][0] for c in forwarded] == TOOL_CALL_CHUNKS
    assert {c["model"] for c in forwarded} == {"local-llama"}
    async with routed.sdk() as client:
        stream = await client.chat.completions.create(
            model="local-llama",
            messages=HELLO,
            tools=TOOLS,
            stream=True,  # type: ignore[arg-type]
        )
        chunks = [c async for c in stream]
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices[0].delta.tool_calls and c.choices[0].delta.tool_calls[0].function
    )
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_stream_usage_from_upstream(routed: Gateway) -> None:
    async with routed.sdk() as client:
        stream = await client.chat.completions.create(
            model="local-llama",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 10


@pytest.mark.parametrize(
    ("status", "client_status", "sdk_error"),
    [
        (400, 400, openai.BadRequestError),
        (429, 429, openai.RateLimitError),
        (401, 502, openai.APIStatusError),
        (500, 500, openai.InternalServerError),
    ],
)
async def test_upstream_errors_keep_status_and_message(
    routed: Gateway, up: FakeOpenAI, status: int, client_status: int, sdk_error: type[Exception]
) -> None:
    up.status = status
    up.error_headers = {"Retry-After": "0"} if status == 429 else {}
    up.error_body = {
        "error": {"message": f"upstream says {status}", "type": "t", "code": "c", "param": None}
    }
    async with routed.sdk() as client:
        with pytest.raises(sdk_error) as info:
            await client.chat.completions.create(model="local-llama", messages=HELLO)
    assert isinstance(info.value, openai.APIStatusError)
    assert info.value.status_code == client_status
    assert ("Retry-After" in info.value.response.headers) == (status == 429)
    if status != 401:
        assert f"upstream says {status}" in info.value.message
    else:
        assert "credentials" in info.value.message
    # 400 and 401 are not worth retrying; 429 and 500 are retried once (retries=1).
    assert len(up.requests) == (2 if status in (429, 500) else 1)


async def test_fallback_before_first_byte(
    routed: Gateway, fake: FakeAichats, up: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake.status = 500
    resp = await routed.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert resp.status == 200
    assert resp.headers["x-aichat-upstream"] == "local-llama (openai)"
    events = json_events(await resp.read())
    assert (
        "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == "Hi from upstream"
    )
    assert {e["model"] for e in events} == {"gpt-4o"}
    assert len(fake.requests) == 2  # one try and one retry on aichats
    assert len(up.requests) == 1
    (line,) = [r for r in caplog.records if r.name == "aichat.access"]
    assert line.fields["upstream"] == "local-llama (openai)"  # type: ignore[attr-defined]
    assert line.fields["attempts"] == 3  # type: ignore[attr-defined]


async def test_no_fallback_after_first_byte(
    routed: Gateway, fake: FakeAichats, up: FakeOpenAI
) -> None:
    fake.chunk_size = 10
    fake.drop_after = 2
    resp = await routed.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    raw = await resp.read()
    assert "[DONE]" not in sse_events(raw)
    assert json_events(raw)[-1]["error"]["code"] == "upstream_error"
    assert len(fake.requests) == 1
    assert up.requests == []


async def test_retries_respect_their_limit(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up, url = openai_upstream
    up.status = 503
    route = ModelConfig(name="m", provider="openai", base_url=url)
    for retries in (0, 3):
        up.requests.clear()
        gateway = await make_gateway(routes=(route,), retries=retries, retry_backoff=0.001)
        assert (await gateway.post_chat({"model": "m", "messages": HELLO})).status == 503
        assert len(up.requests) == retries + 1


async def test_retry_after_is_honoured_and_recovery_works(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up, url = openai_upstream
    up.status, up.fail_times, up.error_headers = 429, 1, {"Retry-After": "0.4"}
    gateway = await make_gateway(
        routes=(ModelConfig(name="m", provider="openai", base_url=url),), retry_backoff=0.001
    )
    started = time.monotonic()
    resp = await gateway.post_chat({"model": "m", "messages": HELLO})
    assert resp.status == 200
    assert time.monotonic() - started >= 0.4
    assert len(up.requests) == 2


async def test_long_retry_after_skips_to_fallback_at_once(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up, url = openai_upstream
    up.status, up.error_headers = 429, {"Retry-After": "120"}
    routes = (
        ModelConfig(name="m", provider="openai", base_url=url, fallbacks=("backup",)),
        ModelConfig(name="backup", provider="mock", text="from the backup"),
    )
    gateway = await make_gateway(routes=routes, retry_max_wait=2)
    started = time.monotonic()
    resp = await gateway.post_chat({"model": "m", "messages": HELLO})
    assert time.monotonic() - started < 1.5
    assert (await resp.json())["choices"][0]["message"]["content"] == "from the backup"
    assert len(up.requests) == 1


async def test_a_failed_chain_names_every_upstreams_failure(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    up, url = openai_upstream
    up.status = 500
    gone = f"http://127.0.0.1:{free_port()}/v1"
    routes = (
        ModelConfig(name="m", provider="openai", base_url=url, fallbacks=('a "forged", x', "down")),
        # A name clients may ask for can hold quotes and commas: it stays one JSON string.
        ModelConfig(name='a "forged", x', provider="openai", base_url=gone),
        ModelConfig(name="down", provider="openai", base_url=gone),
    )
    gateway = await make_gateway(routes=routes, retries=0, breaker_failures=1)
    resp = await gateway.post_chat({"model": "down", "messages": HELLO})
    assert resp.status == 502  # its circuit is open now
    resp = await gateway.post_chat({"model": "m", "messages": HELLO})
    assert resp.status == 502
    message = (await resp.json())["error"]["message"]
    assert message.startswith("openai upstream unreachable: cannot connect to"), message
    assert message.endswith(
        ' Every upstream of the fallback chain failed: "m" 500 "rate_limit", '
        '"a \\"forged\\", x" 502 "upstream_error", "down" circuit open.'
    ), message


async def test_mock_pacing(routed: Gateway) -> None:
    async with routed.sdk() as client:
        started = time.monotonic()
        stream = await client.chat.completions.create(model="slow", messages=HELLO, stream=True)
        arrivals = [
            (time.monotonic() - started, c.choices[0].delta.content)
            async for c in stream
            if c.choices
        ]
    texts = [text for _, text in arrivals if text]
    assert "".join(texts) == "one two three four five"
    assert len(texts) == 5
    first = next(t for t, text in arrivals if text)
    last = [t for t, text in arrivals if text][-1]
    assert last - first >= 4 * 0.05 * 0.8  # four gaps at 20 pieces a second


async def test_mock_first_token_delay(make_gateway: GatewayFactory) -> None:
    routes = (ModelConfig(name="m", provider="mock", first_token_delay=0.3),)
    gateway = await make_gateway(routes=routes)
    started = time.monotonic()
    resp = await gateway.post_chat({"model": "m", "messages": HELLO, "stream": True})
    await resp.content.readline()
    assert time.monotonic() - started >= 0.3


async def test_disconnect_cancels_openai_upstream_too(routed: Gateway, up: FakeOpenAI) -> None:
    up.stall_after = 2
    resp = await routed.post_chat({"model": "local-llama", "messages": HELLO, "stream": True})
    await asyncio.wait_for(resp.content.readline(), 5)
    resp.close()
    await asyncio.wait_for(up.cancelled.wait(), 3)
    assert len(up.requests) == 1


async def test_upstream_connection_is_reused_when_its_body_ends_after_done(
    routed: Gateway, up: FakeOpenAI
) -> None:
    # [DONE], then the end of the body a moment later, as an upstream may send them. An
    # unread end makes aiohttp close the connection: each stream would cost a new one
    # (a TLS handshake, for most upstreams).
    up.end_delay = 0.05
    headers = {"Authorization": f"Bearer {API_KEY}"}
    requests = [
        ("/v1/chat/completions", {"model": "local-llama", "messages": HELLO, "stream": True}),
        ("/v1/chat/completions", {"model": "local-llama", "messages": HELLO, "stream": True}),
        ("/v1/responses", {"model": "local-llama", "input": "x", "stream": True}),
        ("/v1/responses", {"model": "local-llama", "input": "x"}),
        ("/v1/messages", {"model": "local-llama", "messages": HELLO, "max_tokens": 9}),
    ]
    for path, body in requests:
        resp = await routed.http.post(f"{routed.url}{path}", json=body, headers=headers)
        assert resp.status == 200, await resp.text()
        assert b"upstream" in await resp.read()
    assert len(up.requests) == len(requests)
    assert len(up.connections) == 1


async def test_a_kept_alive_connection_closed_unanswered_is_asked_again_at_once(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    # Real llama.cpp closes a connection after a stream though it said Keep-Alive: the next
    # request may go into it before the close arrives (tests/llama). No retries: nothing
    # was answered, so sending it again is not a retry, and waits for no backoff.
    up, url = openai_upstream
    up.close_after_stream = True
    routes = (ModelConfig(name="m", provider="openai", base_url=url),)
    gateway = await make_gateway(routes=routes, retries=0)
    for stream in (True, False, True, False):
        resp = await gateway.post_chat({"model": "m", "messages": HELLO, "stream": stream})
        assert resp.status == 200, await resp.text()
        assert b"upstream" in await resp.read()
    assert (len(up.requests), up.hung_up) == (4, 2)


async def test_a_late_end_of_body_does_not_hold_the_client(
    routed: Gateway, up: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(openai_provider, "END_GRACE", 0.1)
    up.end_delay = 3.0
    body = {"model": "local-llama", "messages": HELLO, "stream": True}
    started = time.perf_counter()
    resp = await routed.post_chat(body)
    assert (await resp.read()).endswith(b"data: [DONE]\n\n")
    assert time.perf_counter() - started < up.end_delay / 2
    # The connection that did not end in time was closed, not pooled: the next is new.
    resp = await routed.post_chat(body)
    assert resp.status == 200
    assert len(up.connections) == 2


async def test_toml_file_with_three_providers(
    tmp_path: Path,
    make_gateway: GatewayFactory,
    upstream: tuple[FakeAichats, str],
    openai_upstream: tuple[FakeOpenAI, str],
) -> None:
    config = tmp_path / "aichat.toml"
    config.write_text(
        f"""
[[models]]
name = "gpt-4o"
provider = "aichats"
base_url = "{upstream[1]}"
fallbacks = ["local-llama"]

[[models]]
name = "local-llama"
provider = "openai"
base_url = "{openai_upstream[1]}"
upstream_model = "llama3.1"
api_key_env = "LLAMA_KEY"

[[models]]
name = "demo"
provider = "mock"
text = "Hello from the mock."
"""
    )
    settings = load_settings(
        {"AICHAT_CONFIG": str(config), "LLAMA_KEY": "sk-llama"}, dotenv_path=None
    )
    assert settings.routes[1].api_key is not None
    gateway = await make_gateway(routes=settings.routes)
    async with gateway.sdk() as client:
        for model, expected in (
            ("gpt-4o", "Hello, world!"),
            ("local-llama", "Hi from upstream"),
            ("demo", "Hello from the mock."),
        ):
            completion = await client.chat.completions.create(model=model, messages=HELLO)
            assert completion.choices[0].message.content == expected
    assert openai_upstream[0].headers[0]["Authorization"] == "Bearer sk-llama"
