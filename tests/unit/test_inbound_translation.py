"""Responses and Anthropic requests -> chat requests, and provider events -> blocks (pure)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from aichat.answer.blocks import BlockDelta, BlockStart, BlockStop, End, segment
from aichat.answer.capabilities import CAPABILITIES, dropped_params
from aichat.core.errors import InvalidRequest
from aichat.core.exchange import Exchange
from aichat.core.prompt import Prompt
from aichat.core.schemas import Validated, parse_chat_request, parse_json
from aichat.inbound import anthropic_api, responses_api
from aichat.operations.timing import server_timing
from aichat.providers.base import (
    Event,
    Finish,
    Incomplete,
    RawChunks,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from aichat.providers.openai_events import chunk_events


def _responses(body: dict[str, object]) -> responses_api.ResponsesRequest:
    return responses_api.ResponsesRequest.model_validate({"model": "m", **body})


def test_responses_items_become_chat_messages() -> None:
    req = _responses(
        {
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "c2", "output": "rain"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ],
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "w"},
            "max_output_tokens": 50,
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {}}},
            "truncation": "auto",
        }
    )
    chat, dropped, _ = responses_api.to_chat_request(req)
    body = chat.body
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert [c["id"] for c in body["messages"][2]["tool_calls"]] == ["c1", "c2"]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert body["max_tokens"] == 50
    assert body["response_format"]["json_schema"]["name"] == "x"
    assert dropped == ["truncation"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": "hi", "store": True}, "store"),
        ({"input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        ({"input": "hi", "text": {"format": True}}, "text.format"),
        ({"input": [{"role": "user", "content": [1]}]}, "input[0].content[0]"),
    ],
)
def test_responses_refuses_what_needs_state_or_bad_shapes(
    body: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        responses_api.to_chat_request(_responses(body))
    assert info.value.param == param


def test_a_translated_request_keeps_integers_past_64_bits() -> None:
    # Read loosely for the untranslated path (its bytes go upstream as sent); read again
    # exactly once it has to be translated.
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "t", "input_schema": {"type": "integer", "maximum": 2**64 + 1}}],
    }
    raw = json.dumps(body).encode()
    loose = parse_json(raw, exact=False)
    assert loose["tools"][0]["input_schema"]["maximum"] != 2**64 + 1  # orjson: a float
    request = Validated(anthropic_api.MessagesRequest, loose, raw)
    chat = anthropic_api.messages_prompt(request, raw, {}).chat()
    assert chat.body["tools"][0]["function"]["parameters"]["maximum"] == 2**64 + 1


def test_anthropic_blocks_become_chat_messages() -> None:
    req = anthropic_api.MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "t1", "name": "w", "input": {"city": "Oslo"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "And?"},
                        {"type": "tool_result", "tool_use_id": "t1", "content": "cold"},
                    ],
                },
            ],
            "stop_sequences": ["END"],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "top_k": 5,
        }
    )
    chat, dropped = anthropic_api.to_chat_request(req)
    messages = chat.body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "user"]
    assert messages[2]["content"] == "Checking."
    assert json.loads(messages[2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    assert messages[3] == {"role": "tool", "tool_call_id": "t1", "content": "cold"}
    assert chat.body["stop"] == ["END"]
    assert chat.body["tool_choice"] == "required"
    assert chat.body["parallel_tool_calls"] is False
    assert dropped == ["top_k"]


def test_odd_tool_results_are_read_as_text_not_a_crash() -> None:
    req = anthropic_api.MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 1,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t", "content": [1, {"x": 2}]},
                        {"type": "tool_result", "tool_use_id": "u", "content": 5, "is_error": True},
                    ],
                }
            ],
        }
    )
    chat, _ = anthropic_api.to_chat_request(req)
    assert [m["content"] for m in chat.body["messages"]] == ["", "Error: "]


def test_anthropic_errors_keep_status_and_name_their_type() -> None:
    err = InvalidRequest("bad")
    assert anthropic_api.error_object(err) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }
    event = anthropic_api.error_event(err)
    assert event.startswith(b"event: error\ndata: {")


def test_openai_chunks_become_neutral_events() -> None:
    chunk = {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "content": "Hi",
                    "tool_calls": [{"index": 0, "id": "c", "function": {"name": "w"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    events, reason = chunk_events(json.dumps(chunk))
    assert events == [TextDelta("Hi"), ToolCallDelta(0, "c", "w", ""), Usage(3, 4)]
    assert reason == "tool_calls"


async def _events(*events: Event) -> AsyncIterator[Event]:
    for event in events:
        yield event


async def test_segment_opens_and_closes_blocks() -> None:
    request = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    raw = '{"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"length"}]}'
    stream = _events(
        RawChunks((raw,)),
        ToolCallDelta(0, "c", "w", '{"a"'),
        ToolCallDelta(0, None, None, ":1}"),
        Usage(1, 2),
        Finish(),
    )
    got = [
        e
        async for found in segment(TextDelta("a"), stream, Prompt.of_chat(request, b""))
        for e in found
    ]
    assert [type(e) for e in got] == [
        BlockStart,
        BlockDelta,
        BlockDelta,
        BlockStop,
        BlockStart,
        BlockDelta,
        BlockDelta,
        BlockStop,
        End,
    ]
    assert got[3] == BlockStop(0, None, "ab")
    assert isinstance(got[7], BlockStop)
    assert got[7].text == '{"a":1}'
    assert got[-1] == End("length", Usage(1, 2))  # the upstream's reason, carried on Finish


async def test_segment_without_finish_is_incomplete() -> None:
    request = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(Incomplete):
        _ = [
            e
            async for found in segment(TextDelta("a"), _events(), Prompt.of_chat(request, b""))
            for e in found
        ]


def test_dropped_params_follow_the_capability_table() -> None:
    body = {"model": "m", "seed": 1, "temperature": 0.2, "stream": True, "stop": None}
    chat = parse_chat_request({**body, "messages": [{"role": "user", "content": "x"}]})
    prompt = Prompt.of_chat(chat, b"")
    assert dropped_params(prompt, "chat", CAPABILITIES["aichats"]) == ["seed", "temperature"]
    assert dropped_params(prompt, "chat", CAPABILITIES["openai"]) == []


def test_what_a_translation_leaves_out_is_dropped_only_for_another_api() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "top_k": 3,
        "messages": [{"role": "user", "content": "x"}],
    }
    request = Validated(anthropic_api.MessagesRequest, body)
    prompt = anthropic_api.messages_prompt(request, json.dumps(body).encode(), {})
    prompt.chat()
    assert dropped_params(prompt, "chat", CAPABILITIES["openai"]) == ["top_k"]
    assert dropped_params(prompt, "messages", CAPABILITIES["anthropic"]) == []


def test_server_timing_header_says_what_is_known() -> None:
    exchange = Exchange("id", arrived=10.0)
    assert server_timing(exchange, 10.002) == "gw;dur=2.00"
    exchange.upstream_called = 10.001
    assert server_timing(exchange, 10.5) == "gw-pre;dur=1.00"
    exchange.upstream_done = 10.4
    assert (
        server_timing(exchange, 10.4005) == "gw-pre;dur=1.00, upstream;dur=399.00, gw-post;dur=0.50"
    )


async def test_each_response_object_lists_the_tools_whatever_writes_the_events() -> None:
    # The tools are encoded once for all events when orjson writes the rest; metadata with
    # an integer past 64 bits makes the events go through json instead, still whole.
    tool = {"type": "function", "name": "t", "parameters": {"type": "object"}}
    for metadata in ({"k": "v"}, {"k": 2**64 + 1}):
        body = {"model": "m", "input": "x", "stream": True, "tools": [tool], "metadata": metadata}
        request = Validated(responses_api.ResponsesRequest, body)()
        envelope = responses_api.Envelope.start(request, request.mapped_tools()[0])
        chat = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}]})
        blocks = segment(TextDelta("hi"), _events(Finish()), Prompt.of_chat(chat, b""))
        raw = b"".join(
            [data async for data in responses_api.ResponseStream(envelope).events(blocks)]
        )
        objects = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
        responses = [o["response"] for o in objects if "response" in o]
        assert [o["type"] for o in objects if "response" in o] == [
            "response.created",
            "response.in_progress",
            "response.completed",
        ]
        assert all(r["tools"] == [tool] and r["metadata"] == metadata for r in responses)
