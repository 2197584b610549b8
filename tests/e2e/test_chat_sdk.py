"""The official openai SDK against the gateway, in front of a real fake aichats upstream."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from tests.conftest import Gateway
from tests.fakes import FakeAichats, json_events, sse_events

HELLO = [{"role": "user", "content": "Say hello"}]


async def test_non_stream_is_a_normal_chat_completion(gateway: Gateway, fake: FakeAichats) -> None:
    fake.pieces = ["Hello", ",\\n", " world", " trylimit"]
    async with gateway.sdk() as client:
        completion = await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-") and len(completion.id) > 12
    assert abs(completion.created - time.time()) < 10  # seconds, not milliseconds
    assert completion.model == "gpt-4o"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello,\n world"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_stream_is_a_normal_chunk_stream(gateway: Gateway, fake: FakeAichats) -> None:
    fake.pieces = ["Hel", "lo ", "wörld ✓", " trylimit"]
    async with gateway.sdk() as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-2024-05-13",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert len({c.created for c in chunks}) == 1
    assert abs(chunks[0].created - time.time()) < 10
    assert {c.model for c in chunks} == {"gpt-4o-2024-05-13"}
    first, *middle, last_choice, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert all(c.choices[0].delta.role is None for c in middle)
    assert "".join(c.choices[0].delta.content or "" for c in middle) == "Hello wörld ✓"
    assert all(c.choices[0].finish_reason is None for c in [first, *middle])
    assert last_choice.choices[0].finish_reason == "stop"
    assert last_choice.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.completion_tokens > 0


async def test_stream_wire_format(gateway: Gateway, fake: FakeAichats) -> None:
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    raw = await resp.read()
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = json_events(raw)
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * len(chunks)
    assert "usage" not in chunks[-1]  # only when stream_options.include_usage asks for it
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_first_piece_reaches_client_before_upstream_finishes(
    gateway: Gateway, fake: FakeAichats
) -> None:
    fake.gate = asyncio.Event()  # the upstream holds everything after its first write back
    fake.chunk_size = len(b"data: Hello\n\n")  # ... which is the first piece alone
    async with gateway.sdk() as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
        chunks = aiter(stream)
        await asyncio.wait_for(anext(chunks), 5)  # role
        first_text = await asyncio.wait_for(anext(chunks), 5)
        assert first_text.choices[0].delta.content == "Hello"
        assert not fake.finished.is_set()
        fake.gate.set()
        rest = [c async for c in chunks]
    assert rest[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7])
async def test_multibyte_text_survives_any_network_split(
    gateway: Gateway, fake: FakeAichats, chunk_size: int
) -> None:
    fake.pieces = ["Grüße 👋🏽 ", "日本語\\nテキスト", " ünïcödé ", "😀"]
    fake.chunk_size = chunk_size
    async with gateway.sdk() as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Grüße 👋🏽 日本語\nテキスト ünïcödé 😀"


async def test_non_data_lines_and_crlf_are_ignored(gateway: Gateway, fake: FakeAichats) -> None:
    fake.raw = (
        b": comment\r\nevent: message\r\ndata: one\r\n\r\nid: 7\ndata:two\n\ndata:  trylimit\n\n"
    )
    async with gateway.sdk() as client:
        completion = await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert completion.choices[0].message.content == "onetwo"


async def test_sdk_sees_unknown_model_as_not_found(gateway: Gateway) -> None:
    async with gateway.sdk() as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="gpt-5-imaginary", messages=HELLO)
    assert info.value.code == "model_not_found"


async def test_sdk_wrong_key_is_authentication_error(gateway: Gateway) -> None:
    async with gateway.sdk(api_key="sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=HELLO)
    assert info.value.code == "invalid_api_key"


async def test_sdk_lists_models(gateway: Gateway) -> None:
    async with gateway.sdk() as client:
        models = [m.id async for m in client.models.list()]
        one = await client.models.retrieve("gpt-4o")
    assert models == ["gpt-4o", "gpt-4o-2024-05-13"]
    assert one.id == "gpt-4o" and one.object == "model"
