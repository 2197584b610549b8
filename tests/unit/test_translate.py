"""Events -> OpenAI chunks and completions, without a server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aichat.answer.translate import DONE, ChunkEncoder, Completion, complete, stream_chunks
from aichat.core.errors import UpstreamError
from aichat.core.schemas import parse_chat_request
from aichat.providers.base import Event, Finish, RawChunks, TextDelta, Usage
from tests.fakes import sse_events

COMPLETION = Completion("chatcmpl-abc", 1_700_000_000, "gpt-4o")


def _request(**extra: Any) -> Any:
    return parse_chat_request(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}
    )


async def _events(*events: Event) -> AsyncIterator[Event]:
    for event in events:
        yield event


def _decode(raw: bytes) -> Any:
    assert raw.startswith(b"data: ")
    assert raw.endswith(b"\n\n")
    return json.loads(raw[6:])


@given(st.text())
def test_text_chunk_is_valid_json_for_any_text(text: str) -> None:
    chunk = _decode(ChunkEncoder(COMPLETION).text(text))
    assert chunk == {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
        ],
    }


def test_role_finish_and_usage_chunks() -> None:
    encoder = ChunkEncoder(Completion("chatcmpl-x", 1, 'we"ird\nmodel'))
    role = _decode(encoder.role())
    assert role["model"] == 'we"ird\nmodel'
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    finish = _decode(encoder.finish("stop"))
    assert finish["choices"][0]["delta"] == {}
    assert finish["choices"][0]["finish_reason"] == "stop"
    usage = _decode(encoder.usage(Usage(3, 4)))
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def _split(writes: list[bytes]) -> list[Any]:
    """The events of a stream's writes (one write may carry several), [DONE] as None."""
    payloads = sse_events(b"".join(writes))
    return [None if p == "[DONE]" else json.loads(p) for p in payloads]


async def test_stream_order_with_usage() -> None:
    request = _request(stream=True, stream_options={"include_usage": True})
    first, *rest = [TextDelta("a"), TextDelta("b"), Finish("stop")]
    out = [c async for c in stream_chunks(first, _events(*rest), request, COMPLETION)]
    # Role with the first delta, and finish, usage and [DONE] together: one write each.
    assert len(out) == 3
    assert out[-1].endswith(DONE)
    *chunks, done = _split(out)
    assert done is None
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "a"},
        {"content": "b"},
        {},
        None,
    ]
    assert chunks[-1]["usage"]["completion_tokens"] >= 1


async def test_upstream_usage_wins_over_counting() -> None:
    request = _request(stream=True, stream_options={"include_usage": True})
    events = _events(Finish("length"), Usage(11, 22))
    out = [c async for c in stream_chunks(TextDelta("x"), events, request, COMPLETION)]
    *_, finish, usage, done = _split(out)
    assert finish["choices"][0]["finish_reason"] == "length"
    assert usage["usage"]["prompt_tokens"] == 11
    assert done is None


async def test_stream_without_finish_raises_instead_of_done() -> None:
    out: list[bytes] = []

    async def consume() -> None:
        async for chunk in stream_chunks(TextDelta("a"), _events(), _request(), COMPLETION):
            out.append(chunk)

    with pytest.raises(UpstreamError):
        await consume()
    # The role and the text, produced before the failure; no ending.
    assert [c["choices"][0]["delta"] for c in _split(out)] == [
        {"role": "assistant", "content": ""},
        {"content": "a"},
    ]
    assert DONE not in b"".join(out)


async def test_forwarded_end_in_the_same_read_goes_out_in_the_same_write() -> None:
    chunk = '{"id":"x","model":"up","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
    closed = False

    async def provider() -> AsyncIterator[Event]:
        nonlocal closed
        try:
            yield Finish()
        finally:
            closed = True

    # [DONE] came with the last chunk: one item, [DONE] included, without waiting for Finish.
    events = provider()
    out = [
        c
        async for c in stream_chunks(RawChunks((chunk,), last=True), events, _request(), COMPLETION)
    ]
    assert out == [
        b'data: {"id":"x","model":"gpt-4o","choices"'
        + chunk.split('"choices"', 1)[1].encode()
        + b"\n\n"
        + DONE
    ]
    assert not closed  # the handler closes the provider, not the translator
    # Otherwise the end waits for Finish, in a write of its own.
    out = [c async for c in stream_chunks(RawChunks((chunk,)), provider(), _request(), COMPLETION)]
    assert len(out) == 2
    assert out[1] == DONE


async def test_complete_builds_a_chat_completion() -> None:
    body = await complete(
        TextDelta("Hel"), _events(TextDelta("lo"), Finish()), _request(), COMPLETION
    )
    result = json.loads(body)
    assert result["object"] == "chat.completion"
    assert result["choices"][0]["message"]["content"] == "Hello"
    assert result["choices"][0]["finish_reason"] == "stop"
    usage = result["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    with pytest.raises(UpstreamError):
        await complete(TextDelta("x"), _events(), _request(), COMPLETION)


def test_completion_ids_are_unique_and_created_in_seconds() -> None:
    a, b = Completion.start("m"), Completion.start("m")
    assert a.id != b.id
    assert a.id.startswith("chatcmpl-")
    assert a.created < 10**11  # seconds; milliseconds would be ~1.7e12
