"""The fake upstream's answers in Anthropic Messages and the OpenAI Responses API.

Shaped as the official SDKs' types have them (and as ``tests/fakes_native.py`` sends
them): named SSE events, one text block or message item whose deltas are the benchmark's
marked pieces, the usage a coding agent's turn gets (most of the prompt read from the
cache). Each answer is built once per shape and model and cached as bytes, like the
upstream's other answers.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from bench.answer import piece

_PROMPT_TOKENS = 12_000
_CACHED_TOKENS = 11_500
_RESPONSE_ID = "resp_benchfakeupstream000000"
_MESSAGE_ID = "msg_benchfakeupstream000000"
_ITEM_ID = "msg_benchfakeitem000000"


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _text(chunks: int) -> str:
    return "".join(piece(i) for i in range(chunks))


def _message(model: str, content: list[Any], stop: str | None, output: int) -> dict[str, Any]:
    usage = {
        "input_tokens": _PROMPT_TOKENS - _CACHED_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": _CACHED_TOKENS,
        "output_tokens": output,
    }
    return {
        "id": _MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


# The index of the first event carrying a piece: where held streams would pause.
MESSAGES_FIRST_PIECE = 3
RESPONSES_FIRST_PIECE = 4


def _typed(name: str, **fields: Any) -> bytes:
    """A Messages event: its ``type`` is its name."""
    return _event(name, {"type": name, **fields})


@lru_cache(maxsize=64)
def messages_events(chunks: int, model: str) -> tuple[bytes, ...]:
    """A streamed message: start, ping, one text block of ``chunks`` deltas, delta, stop."""
    events = [
        _typed("message_start", message=_message(model, [], None, 1)),
        _typed("ping"),
        _typed("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    ]
    events += [
        _typed("content_block_delta", index=0, delta={"type": "text_delta", "text": piece(i)})
        for i in range(chunks)
    ]
    ending = {"stop_reason": "end_turn", "stop_sequence": None}
    events += [
        _typed("content_block_stop", index=0),
        _typed("message_delta", delta=ending, usage={"output_tokens": chunks}),
        _typed("message_stop"),
    ]
    return tuple(events)


@lru_cache(maxsize=64)
def messages_whole(chunks: int, model: str) -> bytes:
    """A whole message with the same text."""
    content = [{"type": "text", "text": _text(chunks)}]
    return json.dumps(_message(model, content, "end_turn", chunks)).encode()


def _item(chunks: int) -> dict[str, Any]:
    part = {"type": "output_text", "text": _text(chunks), "annotations": [], "logprobs": []}
    return {
        "id": _ITEM_ID,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }


def _response(model: str, status: str, output: list[Any], chunks: int) -> dict[str, Any]:
    done = status == "completed"
    usage = {
        "input_tokens": _PROMPT_TOKENS,
        "input_tokens_details": {"cached_tokens": _CACHED_TOKENS},
        "output_tokens": chunks,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": _PROMPT_TOKENS + chunks,
    }
    return {
        "id": _RESPONSE_ID,
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "store": False,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "usage": usage if done else None,
    }


@lru_cache(maxsize=64)
def responses_events(chunks: int, model: str) -> tuple[bytes, ...]:
    """A streamed response: created, in progress, one message item of ``chunks`` text
    deltas, completed; each event with its ``sequence_number``."""
    item = _item(chunks)
    place = {"item_id": _ITEM_ID, "output_index": 0, "content_index": 0}
    started = _response(model, "in_progress", [], chunks)
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    named: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": started}),
        ("response.in_progress", {"response": started}),
        (
            "response.output_item.added",
            {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
        ),
        ("response.content_part.added", {**place, "part": empty}),
    ]
    named += [
        ("response.output_text.delta", {**place, "delta": piece(i), "logprobs": []})
        for i in range(chunks)
    ]
    named += [
        ("response.output_text.done", {**place, "text": _text(chunks), "logprobs": []}),
        ("response.content_part.done", {**place, "part": item["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": _response(model, "completed", [item], chunks)}),
    ]
    return tuple(
        _event(name, {"type": name, **data, "sequence_number": n})
        for n, (name, data) in enumerate(named)
    )


@lru_cache(maxsize=64)
def responses_whole(chunks: int, model: str) -> bytes:
    """A whole response with the same text."""
    return json.dumps(_response(model, "completed", [_item(chunks)], chunks)).encode()
