"""The shared aichats vectors (tests/vectors/aichats_stream.json) against the Python gateway.

The Cloudflare Worker's tests check the same file, so both implementations turn the same
upstream bytes and the same conversations into the same answers and the same history.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aichat.answer.translate import prompt_text
from aichat.core import tokens
from aichat.core.errors import InvalidRequest
from aichat.core.schemas import parse_chat_request
from aichat.providers.aichats import build_history, piece_text
from aichat.providers.streaming import iter_line_batches, sse_payloads

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "aichats_stream.json").read_text(encoding="utf-8")
)


def _cases(section: str) -> Any:
    return pytest.mark.parametrize(
        "case", VECTORS[section], ids=[case["name"] for case in VECTORS[section]]
    )


def _chunk(chunk: str | list[int]) -> bytes:
    return chunk.encode() if isinstance(chunk, str) else bytes(chunk)


async def _reads(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _pieces(chunks: list[bytes]) -> list[str]:
    """What the aichats provider makes of these reads: the non-empty answer pieces."""
    pieces = []
    async for lines in iter_line_batches(_reads(chunks)):
        pieces.extend(text for data in sse_payloads(lines) if (text := piece_text(data)))
    return pieces


@_cases("stream")
async def test_stream_vector(case: dict[str, Any]) -> None:
    chunks = [_chunk(c) for c in case["chunks"]]
    pieces = await _pieces(chunks)
    assert pieces == case["pieces"]
    assert "".join(pieces) == case["text"]


@_cases("stream")
async def test_stream_vector_does_not_depend_on_reads(case: dict[str, Any]) -> None:
    body = b"".join(_chunk(c) for c in case["chunks"])
    assert await _pieces([body[i : i + 1] for i in range(len(body))]) == case["pieces"]
    for cut in range(1, len(body)):
        assert await _pieces([body[:cut], body[cut:]]) == case["pieces"], cut


def _request(case: dict[str, Any]) -> Any:
    return parse_chat_request({"model": "gpt-4o", **case["request"]})


@_cases("history")
def test_history_vector(case: dict[str, Any]) -> None:
    request = _request(case)
    if "error" in case:
        with pytest.raises(InvalidRequest) as raised:
            build_history(request, case["mode"])
        expected = case["error"]
        assert (raised.value.status, raised.value.code, raised.value.param) == (
            expected["status"],
            expected["code"],
            expected["param"],
        )
    else:
        assert build_history(request, case["mode"]) == case["history"]


@_cases("usage")
def test_usage_vector(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # The vectors hold the tokenizer-free estimate, the Worker's only way to count.
    monkeypatch.setattr(tokens, "count_tokens", tokens._estimate)
    request = _request(case)
    assert tokens.prompt_tokens(prompt_text(request)) == case["prompt_tokens"]
    assert tokens._estimate(case["answer"]) == case["completion_tokens"]
