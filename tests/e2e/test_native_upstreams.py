"""Native upstream APIs: Anthropic Messages and OpenAI Responses, untranslated when the client
speaks them, translated for every other client, with errors, retries and usage per API."""

from __future__ import annotations

import json
import logging
from typing import Any

import anthropic
import openai
import pytest
from pydantic import SecretStr

from aichat.core.config import ModelConfig
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.fakes import FakeOpenAI
from tests.fakes_native import ENCRYPTED, SIGNATURE, FakeAnthropic, FakeResponses

UPSTREAM_KEY = "sk-upstream-secret"
WEATHER = {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}
CHAT_WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
RESPONSES_WEATHER = {"type": "function", "name": "get_weather", "parameters": {}}


@pytest.fixture
async def gw(
    make_gateway: GatewayFactory,
    claude_up: tuple[FakeAnthropic, str],
    responses_up: tuple[FakeResponses, str],
    openai_upstream: tuple[FakeOpenAI, str],
) -> Gateway:
    secret = SecretStr(UPSTREAM_KEY)
    routes = (
        ModelConfig(
            name="claude",
            provider="anthropic",
            base_url=claude_up[1],
            upstream_model="claude-sonnet-4-5",
            api_key=secret,
        ),
        ModelConfig(
            name="resp",
            provider="openai",
            api="responses",
            base_url=responses_up[1],
            upstream_model="gpt-5-codex",
            api_key=secret,
        ),
        ModelConfig(name="chat", provider="openai", base_url=openai_upstream[1]),
    )
    return await make_gateway(routes=routes, retries=1, retry_backoff=0)


def _renamed(data: bytes, upstream: str, client: str) -> bytes:
    return data.replace(f'"model": "{upstream}"'.encode(), f'"model":"{client}"'.encode())


async def _post(gw: Gateway, path: str, raw: bytes, **headers: str) -> Any:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}", **headers}
    return await gw.http.post(f"{gw.url}{path}", data=raw, headers=headers)


# A Claude Code-like request: everything a translation would lose.
CLAUDE_BODY: dict[str, Any] = {
    "model": "claude",
    "max_tokens": 2048,
    "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {
                        "type": "base64",
                        "media_type": "application/pdf",
                        "data": "JVBERi0x",
                    },
                    "citations": {"enabled": True},
                },
                {"type": "text", "text": "Weather?", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": SIGNATURE},
                {"type": "tool_use", "id": "toolu_00", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_00", "content": "9 C"}],
        },
    ],
    "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "a_field_nobody_knows": {"kept": [1, 2.50, "x"]},
}


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_reach_an_anthropic_route_untouched_but_for_the_model(
    gw: Gateway, claude_up: tuple[FakeAnthropic, str], stream: bool
) -> None:
    fake = claude_up[0]
    fake.thinking, fake.tool = "Let me check.", True
    # Spacing, key order and number spelling as a client wrote them, not as aichat would.
    raw = json.dumps({**CLAUDE_BODY, "stream": stream}, indent=1).encode()
    resp = await _post(
        gw,
        "/v1/messages",
        raw,
        **{"anthropic-beta": "context-management-2025-06-27", "anthropic-version": "2023-06-01"},
    )
    assert resp.status == 200, await resp.text()
    got = await resp.read()
    (sent,) = fake.raw_requests
    assert sent == raw.replace(b'"model": "claude"', b'"model":"claude-sonnet-4-5"', 1)
    headers = fake.headers[0]
    assert headers["anthropic-beta"] == "context-management-2025-06-27"
    assert headers["x-api-key"] == UPSTREAM_KEY  # the gateway's upstream key, not the client's
    assert API_KEY not in json.dumps(headers)
    assert got == _renamed(fake.sent[0], "claude-sonnet-4-5", "claude")
    assert SIGNATURE.encode() in got
    assert resp.headers["x-aichat-upstream"] == "claude (anthropic)"
    assert "x-aichat-dropped-params" not in resp.headers


RESPONSES_BODY: dict[str, Any] = {
    "model": "resp",
    "previous_response_id": "resp_earlier",
    "store": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "codex-session-1",
    "prompt_cache_retention": "24h",
    "input": [
        {"type": "reasoning", "id": "rs_0", "summary": [], "encrypted_content": ENCRYPTED},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
    ],
    "tools": [{"type": "web_search"}, RESPONSES_WEATHER],
    "reasoning": {"effort": "high", "summary": "auto"},
}


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_reach_a_responses_route_untouched_but_for_the_model(
    gw: Gateway, responses_up: tuple[FakeResponses, str], stream: bool
) -> None:
    fake = responses_up[0]
    raw = json.dumps({**RESPONSES_BODY, "stream": stream}).encode()
    resp = await _post(gw, "/v1/responses", raw)
    assert resp.status == 200, await resp.text()
    got = await resp.read()
    assert fake.raw_requests == [raw.replace(b'"model": "resp"', b'"model":"gpt-5-codex"', 1)]
    assert fake.headers[0]["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert got == _renamed(fake.sent[0], "gpt-5-codex", "resp")
    assert ENCRYPTED.encode() in got and b"web_search_call" in got


def _openai(gw: Gateway) -> openai.AsyncOpenAI:
    return gw.sdk()


def _claude(gw: Gateway) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=gw.url, api_key=API_KEY, max_retries=0, _strict_response_validation=True
    )


async def _chat(gw: Gateway, model: str, stream: bool, tools: bool) -> tuple[str, list[Any], Any]:
    extra: dict[str, Any] = {"tools": [CHAT_WEATHER]} if tools else {}
    messages: Any = [{"role": "user", "content": "Weather?"}]
    async with _openai(gw) as client:
        if not stream:
            answer = await client.chat.completions.create(model=model, messages=messages, **extra)
            message = answer.choices[0].message
            calls = [
                (c.function.name, json.loads(c.function.arguments))
                for c in message.tool_calls or ()
            ]
            return message.content or "", calls, answer.usage
        chunks = await client.chat.completions.create(
            model=model,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
        text, args, names, usage = "", "", [], None
        async for chunk in chunks:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                for call in choice.delta.tool_calls or ():
                    names += [call.function.name] if call.function and call.function.name else []
                    args += call.function.arguments or "" if call.function else ""
        return text, [(name, json.loads(args)) for name in names], usage


async def _responses(
    gw: Gateway, model: str, stream: bool, tools: bool
) -> tuple[str, list[Any], Any]:
    extra: dict[str, Any] = {"tools": [RESPONSES_WEATHER]} if tools else {}
    async with _openai(gw) as client:
        if stream:
            async with client.responses.stream(model=model, input="Weather?", **extra) as events:
                answer = await events.get_final_response()
        else:
            answer = await client.responses.create(model=model, input="Weather?", **extra)
    calls = [
        (item.name, json.loads(item.arguments))
        for item in answer.output
        if item.type == "function_call"
    ]
    return answer.output_text, calls, answer.usage


async def _messages(
    gw: Gateway, model: str, stream: bool, tools: bool
) -> tuple[str, list[Any], Any]:
    extra: dict[str, Any] = {"tools": [WEATHER]} if tools else {}
    messages: Any = [{"role": "user", "content": "Weather?"}]
    async with _claude(gw) as client:
        if stream:
            async with client.messages.stream(
                model=model, max_tokens=300, messages=messages, **extra
            ) as events:
                answer = await events.get_final_message()
        else:
            answer = await client.messages.create(
                model=model, max_tokens=300, messages=messages, **extra
            )
    text = "".join(block.text for block in answer.content if block.type == "text")
    calls = [(block.name, block.input) for block in answer.content if block.type == "tool_use"]
    return text, calls, answer.usage


CLIENTS = {"chat": _chat, "responses": _responses, "messages": _messages}
UPSTREAM_TEXT = {
    "chat": "Hi from upstream",
    "resp": "Hello from Responses",
    "claude": "Hello from Claude",
}


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", ["chat", "resp", "claude"])
@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
async def test_every_client_api_gets_every_upstream_api_s_answer(
    gw: Gateway,
    claude_up: tuple[FakeAnthropic, str],
    responses_up: tuple[FakeResponses, str],
    openai_upstream: tuple[FakeOpenAI, str],
    api: str,
    model: str,
    stream: bool,
    tools: bool,
) -> None:
    claude_up[0].tool = responses_up[0].tool = openai_upstream[0].tool_calls = tools
    text, calls, usage = await CLIENTS[api](gw, model, stream, tools)
    if tools and model == "chat":  # the fake chat upstream answers a call with no text
        assert text == ""
    else:
        assert text == UPSTREAM_TEXT[model]
    assert calls == ([("get_weather", {"city": "Paris"})] if tools else [])
    assert usage is not None


async def test_cached_tokens_reach_every_client_in_its_own_terms(gw: Gateway) -> None:
    # Anthropic: 3 uncached + 10 written + 255 read = 268 prompt tokens.
    _, _, chat = await _chat(gw, "claude", stream=True, tools=False)
    assert (chat.prompt_tokens, chat.prompt_tokens_details.cached_tokens) == (268, 255)
    _, _, responses = await _responses(gw, "claude", stream=False, tools=False)
    assert (responses.input_tokens, responses.input_tokens_details.cached_tokens) == (268, 255)
    _, _, messages = await _messages(gw, "resp", stream=True, tools=False)
    assert (messages.input_tokens, messages.cache_read_input_tokens) == (1, 255)
    _, _, untouched = await _messages(gw, "claude", stream=False, tools=False)
    assert (untouched.input_tokens, untouched.cache_creation_input_tokens) == (3, 10)
    metrics = await (await gw.http.get(f"{gw.url}/metrics")).text()
    assert 'kind="cache_read",model="claude",upstream="claude (anthropic)"} 765.0' in metrics


async def test_reasoning_tokens_reach_every_client_whose_api_counts_them_apart(
    gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    # The Responses upstream: 12 output tokens, 4 of them reasoning.
    for stream in (False, True):
        _, _, chat = await _chat(gw, "resp", stream=stream, tools=False)
        assert chat.completion_tokens == 12
        assert chat.completion_tokens_details.reasoning_tokens == 4
    _, _, messages = await _messages(gw, "resp", stream=True, tools=False)
    assert messages.output_tokens == 12  # Anthropic's output_tokens hold the thinking
    openai_upstream[0].usage = {  # as o4-mini reports it
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 2,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    for stream in (False, True):
        _, _, responses = await _responses(gw, "chat", stream=stream, tools=False)
        assert (responses.output_tokens, responses.output_tokens_details.reasoning_tokens) == (3, 2)
    # Anthropic never counts thinking apart: a chat client gets no count rather than a 0 that
    # would say Claude did not think; the Responses API requires one.
    _, _, chat = await _chat(gw, "claude", stream=True, tools=False)
    assert chat.completion_tokens_details is None
    _, _, responses = await _responses(gw, "claude", stream=False, tools=False)
    assert (responses.output_tokens, responses.output_tokens_details.reasoning_tokens) == (9, 0)
    metrics = await (await gw.http.get(f"{gw.url}/metrics")).text()
    assert 'kind="reasoning",model="resp",upstream="resp (openai)"} 12.0' in metrics
    assert 'kind="reasoning",model="chat",upstream="chat (openai)"} 4.0' in metrics
    assert 'kind="reasoning",model="claude"' not in metrics


async def _claude_fails(gw: Gateway) -> anthropic.APIStatusError:
    """The error a Messages client gets for a short request to the anthropic route."""
    async with _claude(gw) as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            await client.messages.create(
                model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
    return info.value


async def test_anthropic_overload_is_retried_then_answered(
    gw: Gateway, claude_up: tuple[FakeAnthropic, str]
) -> None:
    fake = claude_up[0]
    fake.error(529, "overloaded_error", "Overloaded")
    fake.fail_times = 1
    text, _, _ = await _messages(gw, "claude", stream=True, tools=False)
    assert text == "Hello from Claude"
    assert len(fake.raw_requests) == 2


async def test_anthropic_overload_that_lasts_keeps_its_type_for_messages_clients(
    gw: Gateway, claude_up: tuple[FakeAnthropic, str]
) -> None:
    claude_up[0].error(529, "overloaded_error", "Overloaded")
    error = await _claude_fails(gw)
    assert error.status_code == 529
    assert error.body["error"]["type"] == "overloaded_error"
    assert len(claude_up[0].raw_requests) == 2  # one retry (AICHAT_RETRIES=1)


async def test_an_invalid_request_is_returned_at_once_in_the_client_s_shape(
    gw: Gateway, claude_up: tuple[FakeAnthropic, str]
) -> None:
    claude_up[0].error(400, "invalid_request_error", "max_tokens: too large")
    error = await _claude_fails(gw)
    assert isinstance(error, anthropic.BadRequestError)
    assert error.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: too large"},
    }
    async with _openai(gw) as chat:
        with pytest.raises(openai.BadRequestError) as shaped:
            await chat.chat.completions.create(
                model="claude", messages=[{"role": "user", "content": "x"}]
            )
    assert shaped.value.body["message"] == "max_tokens: too large"  # type: ignore[index]
    assert len(claude_up[0].raw_requests) == 2  # never retried


async def test_an_upstream_refusing_the_gateway_s_key_is_a_502(
    gw: Gateway, claude_up: tuple[FakeAnthropic, str]
) -> None:
    claude_up[0].error(401, "authentication_error", "invalid x-api-key")
    error = await _claude_fails(gw)
    assert error.status_code == 502


async def test_an_error_event_ends_a_forwarded_stream_as_the_upstream_sent_it(
    gw: Gateway, claude_up: tuple[FakeAnthropic, str]
) -> None:
    fake = claude_up[0]
    fake.error_event_after = 4  # after message_start, ping, a block start and one delta
    raw = json.dumps(
        {
            "model": "claude",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        }
    )
    resp = await _post(gw, "/v1/messages", raw.encode())
    got = await resp.read()
    assert got == _renamed(fake.sent[0], "claude-sonnet-4-5", "claude")
    assert got.endswith(b'"overloaded_error", "message": "Overloaded"}}\n\n')
    assert b"message_stop" not in got
    # A chat client gets the failure in its API's words, and no [DONE].
    chat = await _post(
        gw,
        "/v1/chat/completions",
        json.dumps(
            {"model": "claude", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        ).encode(),
    )
    tail = (await chat.read()).decode()
    assert "[DONE]" not in tail and "Overloaded" in tail.split("\n\n")[-2]


async def test_a_failed_response_is_forwarded_and_never_completes_another_client(
    gw: Gateway, responses_up: tuple[FakeResponses, str]
) -> None:
    fake = responses_up[0]
    fake.fail_event = True
    resp = await _post(
        gw, "/v1/responses", json.dumps({"model": "resp", "input": "x", "stream": True}).encode()
    )
    got = await resp.read()
    assert got == _renamed(fake.sent[0], "gpt-5-codex", "resp")
    assert b"event: response.failed" in got and b"response.completed" not in got
    msg = await _post(
        gw,
        "/v1/messages",
        json.dumps(
            {
                "model": "resp",
                "max_tokens": 5,
                "stream": True,
                "messages": [{"role": "user", "content": "x"}],
            }
        ).encode(),
    )
    events = (await msg.read()).decode()
    assert events.rstrip().split("\n\n")[-1].startswith("event: error")
    assert "message_stop" not in events and "The model broke down." in events


async def test_a_stream_cut_short_ends_with_the_api_s_error_event(
    gw: Gateway, claude_up: tuple[FakeAnthropic, str], responses_up: tuple[FakeResponses, str]
) -> None:
    claude_up[0].drop_after = 5
    responses_up[0].drop_after = 5
    raw = json.dumps(
        {
            "model": "claude",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        }
    )
    got = (await (await _post(gw, "/v1/messages", raw.encode())).read()).decode()
    assert got.split("\n\n")[-2].startswith("event: error") and "message_stop" not in got
    raw = json.dumps({"model": "resp", "input": "x", "stream": True})
    got = (await (await _post(gw, "/v1/responses", raw.encode())).read()).decode()
    names = [block.split("\n")[0] for block in got.split("\n\n") if block]
    assert names[-2:] == ["event: error", "event: response.failed"]
    assert "response.completed" not in got


async def test_translated_requests_name_what_they_drop(
    gw: Gateway, claude_up: tuple[FakeAnthropic, str], responses_up: tuple[FakeResponses, str]
) -> None:
    body = {"model": "claude", "seed": 7, "n": 1, "messages": [{"role": "user", "content": "x"}]}
    resp = await _post(gw, "/v1/chat/completions", json.dumps(body).encode())
    assert resp.status == 200
    assert resp.headers["x-aichat-dropped-params"] == "n,seed"
    sent = claude_up[0].requests[0]
    assert (sent["model"], sent["max_tokens"], sent["messages"]) == (
        "claude-sonnet-4-5",
        4096,
        [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
    )
    body = {
        "model": "resp",
        "stop": ["END"],
        "max_tokens": 9,
        "messages": [{"role": "user", "content": "x"}],
    }
    resp = await _post(gw, "/v1/chat/completions", json.dumps(body).encode())
    assert resp.headers["x-aichat-dropped-params"] == "stop"
    sent = responses_up[0].requests[0]
    assert (sent["store"], sent["max_output_tokens"]) == (False, 9)


async def test_native_paths_are_timed_metered_and_logged(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aichat.access")
    raw = json.dumps(
        {
            "model": "claude",
            "max_tokens": 5,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        }
    )
    resp = await _post(gw, "/v1/messages", raw.encode())
    await resp.read()
    assert resp.headers["Server-Timing"].startswith("gw-pre;dur=")
    (line,) = [r for r in caplog.records if r.name == "aichat.access"]
    fields = line.fields  # type: ignore[attr-defined]
    assert (fields["upstream"], fields["prompt_tokens"], fields["completion_tokens"]) == (
        "claude (anthropic)",
        268,
        9,
    )
    assert (fields["cache_read_tokens"], fields["cache_write_tokens"]) == (255, 10)
    assert "gw_post_ms" in fields
