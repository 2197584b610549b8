"""A prompt too long for its model, in each upstream's words, reaches each client in the
canonical form of its own API; ``context_fallbacks`` answer it instead when configured.

The upstream is a scripted server on 127.0.0.1 answering every API's path with the bytes a
test gives it: the error bodies and events below are what each server sends (see
tests/llama/test_llamacpp.py for llama.cpp's, asked for real).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web

from aichat.answer.state import ROUTER
from aichat.core.config import ModelConfig
from tests.conformance.checks import parse_sse
from tests.conftest import API_KEY, Gateway, GatewayFactory, _start

PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
HEADERS = {"Authorization": f"Bearer {API_KEY}", "anthropic-version": "2023-06-01"}

OPENAI = {
    "message": "This model's maximum context length is 8192 tokens. However, your messages "
    "resulted in 9000 tokens. Please reduce the length of the messages.",
    "type": "invalid_request_error",
    "param": "messages",
    "code": "context_length_exceeded",
}
LLAMACPP = {
    "code": 400,
    "type": "exceed_context_size_error",
    "message": "request (9000 tokens) exceeds the available context size (8192 tokens), try "
    "increasing it",
    "n_prompt_tokens": 9000,
    "n_ctx": 8192,
}
VLLM = {
    "object": "error",
    "type": "BadRequestError",
    "code": 400,
    "message": "This model's maximum context length is 8192 tokens. However, you requested "
    "9100 tokens (9000 in the messages, 100 in the completion). Please reduce the length of "
    "the messages or completion.",
}
ANTHROPIC = {
    "type": "invalid_request_error",
    "message": "prompt is too long: 9000 tokens > 8192 maximum",
}
RESPONSES = {
    "message": "Your input exceeds the context window of this model. Please adjust your input "
    "and try again.",
    "type": "invalid_request_error",
    "param": "input",
    "code": "context_length_exceeded",
}

# Each upstream's error body before the first byte, the route that speaks its API, and
# whether it gives the counts.
BODIES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "openai": ("chat-up", {"error": OPENAI}, True),
    "llamacpp": ("chat-up", {"error": LLAMACPP}, True),
    "vllm": ("chat-up", {"error": VLLM}, True),
    "ollama": ("chat-up", {"error": "the input length exceeds the context length"}, False),
    "anthropic": ("claude-up", {"type": "error", "error": ANTHROPIC}, True),
    "responses": ("resp-up", {"error": RESPONSES}, False),
}


@dataclass
class Scripted:
    """Answers every POST with ``status`` and ``body``; an SSE body is sent in ``writes``."""

    status: int = 400
    writes: list[bytes] = field(default_factory=list)
    content_type: str = "application/json"
    paths: list[str] = field(default_factory=list)

    def error(self, body: dict[str, Any], status: int = 400) -> None:
        """Answer with this JSON error body."""
        self.status, self.content_type = status, "application/json"
        self.writes = [json.dumps(body).encode()]

    def events(self, *events: bytes) -> None:
        """Answer 200 with these server-sent events, one write each."""
        self.status, self.content_type = 200, "text/event-stream"
        self.writes = list(events)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.paths.append(request.path)
        response = web.StreamResponse(
            status=self.status, headers={"Content-Type": self.content_type}
        )
        await response.prepare(request)
        for data in self.writes:
            await response.write(data)
        await response.write_eof()
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    fake = Scripted()
    runner, url = await _start(fake.app())
    yield fake, url
    await runner.cleanup()


@pytest.fixture
async def gw(make_gateway: GatewayFactory, scripted: tuple[Scripted, str]) -> Gateway:
    url = scripted[1]
    routes = (
        ModelConfig(name="chat-up", provider="openai", base_url=f"{url}/v1"),
        ModelConfig(name="resp-up", provider="openai", base_url=f"{url}/v1", api="responses"),
        ModelConfig(name="claude-up", provider="anthropic", base_url=url),
        ModelConfig(name="big", provider="mock", text="Plenty of room here."),
        ModelConfig(name="backup", provider="mock", text="The ordinary fallback."),
        ModelConfig(
            name="small",
            provider="openai",
            base_url=f"{url}/v1",
            fallbacks=("backup",),
            context_fallbacks=("chat-up", "big"),
        ),
    )
    return await make_gateway(routes=routes, retries=0, breaker_failures=1)


def request(api: str, model: str, stream: bool) -> dict[str, Any]:
    """A short request of ``api``."""
    if api == "responses":
        return {"model": model, "input": "Hello", "stream": stream}
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Hello"}]}
    return {**body, "max_tokens": 16, "stream": stream}


async def send(gw: Gateway, api: str, body: dict[str, Any]) -> tuple[int, bytes]:
    """Send ``body`` to ``api``: the answer's status and bytes."""
    async with gw.http.post(gw.url + PATHS[api], json=body, headers=HEADERS) as answer:
        return answer.status, await answer.read()


def assert_canonical(api: str, body: dict[str, Any], counted: bool) -> None:
    """``body`` is the overflow as ``api``'s own server says it."""
    if api == "messages":
        message = "prompt is too long: 9000 tokens > 8192 maximum" if counted else None
        assert body == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": message or "prompt is too long"},
        }
        return
    error = body["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")
    if counted:
        assert error["message"] == OPENAI["message"]
    else:
        assert error["message"].startswith("Your input exceeds the context window")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", list(PATHS))
@pytest.mark.parametrize("server", list(BODIES))
async def test_an_overflow_before_the_first_byte_is_each_client_s_own_400(
    gw: Gateway, scripted: tuple[Scripted, str], server: str, api: str, stream: bool
) -> None:
    route, error, counted = BODIES[server]
    fake = scripted[0]
    fake.error(error)
    status, raw = await send(gw, api, request(api, route, stream))
    assert status == 400
    assert_canonical(api, json.loads(raw), counted)
    assert len(fake.paths) == 1  # never retried


def _sse(name: str | None, data: dict[str, Any]) -> bytes:
    line = f"data: {json.dumps(data)}\n\n"
    return (f"event: {name}\n" + line if name else line).encode()


# Each upstream API's opening event and its overflow as a stream event, with the route.
EVENTS: dict[str, tuple[str, bytes, bytes]] = {
    "chat": (
        "chat-up",
        _sse(None, {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                    "choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
        _sse(None, {"error": LLAMACPP}),
    ),
    "messages": (
        "claude-up",
        _sse("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 0}}}),
        _sse("error", {"type": "error", "error": ANTHROPIC}),
    ),
    "responses": (
        "resp-up",
        _sse("response.created", {"type": "response.created", "sequence_number": 0,
                                  "response": {"id": "resp_1", "model": "m", "status": "in_progress"}}),
        _sse("response.failed", {"type": "response.failed", "sequence_number": 1, "response": {
            "id": "resp_1", "model": "m", "status": "failed",
            "error": {"code": "context_length_exceeded", "message": OPENAI["message"]}}}),
    ),
}  # fmt: skip


def ending(api: str, raw: bytes) -> dict[str, Any]:
    """The failure a stream of ``api`` ended with, which must be its last event."""
    events = parse_sse(raw, named=api != "chat")
    name, data = events[-1]
    if api == "responses":
        assert name == "response.failed"
        assert events[-2][1]["code"] == "context_length_exceeded"  # the ``error`` event
        error = data["response"]["error"]
        return {"error": {"type": "invalid_request_error", **error}}
    if api == "messages":
        assert name == "error"
    assert data is not None
    return dict(data)


@pytest.mark.parametrize("api", list(PATHS))
@pytest.mark.parametrize("server", list(EVENTS))
async def test_an_overflow_event_ends_a_started_stream_in_the_client_s_own_words(
    gw: Gateway, scripted: tuple[Scripted, str], server: str, api: str
) -> None:
    route, opening, failure = EVENTS[server]
    scripted[0].events(opening, failure)
    status, raw = await send(gw, api, request(api, route, True))
    assert status == 200
    assert b"[DONE]" not in raw and b"message_stop" not in raw and b"completed" not in raw
    assert_canonical(api, ending(api, raw), counted=True)


@pytest.mark.parametrize("api", list(PATHS))
@pytest.mark.parametrize("server", list(EVENTS))
async def test_an_overflow_event_before_anything_else_is_an_http_400(
    gw: Gateway, scripted: tuple[Scripted, str], server: str, api: str
) -> None:
    route, _, failure = EVENTS[server]
    scripted[0].events(failure)
    status, raw = await send(gw, api, request(api, route, True))
    assert status == 400
    assert_canonical(api, json.loads(raw), counted=True)


async def test_the_official_sdks_read_the_overflow_as_their_own(
    gw: Gateway, scripted: tuple[Scripted, str]
) -> None:
    scripted[0].error({"error": LLAMACPP})
    async with gw.sdk() as client:
        with pytest.raises(openai.BadRequestError) as chat:
            await client.chat.completions.create(
                model="chat-up", messages=[{"role": "user", "content": "Hello"}]
            )
        with pytest.raises(openai.BadRequestError) as responses:
            await client.responses.create(model="chat-up", input="Hello")
    assert chat.value.code == responses.value.code == "context_length_exceeded"
    claude = anthropic.AsyncAnthropic(
        base_url=gw.url, api_key=API_KEY, max_retries=0, _strict_response_validation=True
    )
    async with claude:
        with pytest.raises(anthropic.BadRequestError) as messages:
            await claude.messages.create(
                model="chat-up", max_tokens=16, messages=[{"role": "user", "content": "Hello"}]
            )
    assert messages.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 9000 tokens > 8192 maximum",
        },
    }


@pytest.mark.parametrize("api", list(PATHS))
async def test_a_context_fallback_answers_an_overflow_and_only_an_overflow(
    gw: Gateway, scripted: tuple[Scripted, str], api: str
) -> None:
    fake = scripted[0]
    fake.error({"error": LLAMACPP})
    status, raw = await send(gw, api, request(api, "small", False))
    assert status == 200 and b"Plenty of room here." in raw, raw  # big's answer
    # small overflowed, then chat-up (the same upstream) too: each tried once, in order.
    assert len(fake.paths) == 2
    fake.error({"error": {"message": "boom", "type": "server_error"}}, status=500)
    status, raw = await send(gw, api, request(api, "small", False))
    assert status == 200 and b"The ordinary fallback." in raw, raw  # backup's


async def test_an_overflow_never_counts_against_the_circuit(
    gw: Gateway, scripted: tuple[Scripted, str]
) -> None:
    fake = scripted[0]
    fake.error({"type": "error", "error": ANTHROPIC})
    for _ in range(3):  # one failure opens this gateway's circuits
        status, _ = await send(gw, "chat", request("chat", "claude-up", False))
        assert status == 400
    assert len(fake.paths) == 3  # each reached the upstream: the circuit stayed closed
    assert gw.app[ROUTER].circuits()["claude-up (anthropic)"] == "closed"


# An overflow as older llama.cpp servers sent it: status 500, in these words.
OLD_LLAMACPP = {
    "code": 500,
    "type": "server_error",
    "message": "the request exceeds the available context size, try increasing the context size",
}


@pytest.mark.parametrize("stream", [False, True], ids=["status-500", "first-event"])
async def test_an_overflow_is_never_retried_where_other_failures_are(
    make_gateway: GatewayFactory, scripted: tuple[Scripted, str], stream: bool
) -> None:
    """Sent where a retry would follow any other failure: with a 5xx status, or as a
    stream's first event."""
    fake, url = scripted
    route = ModelConfig(name="chat-up", provider="openai", base_url=f"{url}/v1")
    gateway = await make_gateway(routes=(route,), retries=2, retry_backoff=0, breaker_failures=1)

    def fail(details: dict[str, Any]) -> None:
        if stream:
            fake.events(_sse(None, {"error": details}))
        else:
            fake.error({"error": details}, status=500)

    fail(LLAMACPP if stream else OLD_LLAMACPP)
    status, raw = await send(gateway, "chat", request("chat", "chat-up", stream))
    assert status == 400
    assert json.loads(raw)["error"]["code"] == "context_length_exceeded"
    assert len(fake.paths) == 1
    assert gateway.app[ROUTER].circuits()["chat-up (openai)"] == "closed"
    fail({"message": "boom", "type": "server_error"})  # any other failure: retried, counted
    await send(gateway, "chat", request("chat", "chat-up", stream))
    assert len(fake.paths) == 1 + 3
    assert gateway.app[ROUTER].circuits()["chat-up (openai)"] == "open"
