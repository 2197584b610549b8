"""Tool emulation: the prompt, the streaming scanner and the parser, without any upstream."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aichat.core.schemas import parse_chat_request
from aichat.providers.tool_emulation import CLOSE, OPEN, CallScanner, parse_calls, prompted_request

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
CALL = f'{OPEN}\n[{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}]\n{CLOSE}'


def _scan(pieces: list[str]) -> tuple[str, list[tuple[str, str]]]:
    scanner = CallScanner()
    text = "".join(scanner.feed(piece) for piece in pieces)
    rest, calls = scanner.finish({"get_weather"})
    return text + rest, calls


@given(st.lists(st.text(max_size=8), max_size=12))
def test_plain_text_comes_back_unchanged_however_it_is_cut(pieces: list[str]) -> None:
    text, calls = _scan(pieces)
    if OPEN not in "".join(pieces):
        assert (text, calls) == ("".join(pieces), [])


@given(st.integers(1, len(CALL) - 1), st.integers(1, len(CALL) - 1))
def test_a_call_is_found_wherever_the_stream_cuts_it(a: int, b: int) -> None:
    a, b = sorted((a, b))
    text, calls = _scan(["Sure. ", CALL[:a], CALL[a:b], CALL[b:]])
    assert text == "Sure. "
    assert calls == [("get_weather", '{"city": "Paris"}')]


def test_text_before_the_marker_is_not_held_back() -> None:
    scanner = CallScanner()
    assert scanner.feed("Hello <to") == "Hello "  # "<to" may start the marker
    assert scanner.feed("day>") == "<today>"


@pytest.mark.parametrize(
    "block",
    [
        "not json",
        '[{"name": "unknown_tool", "arguments": {}}]',
        '[{"name": "get_weather", "arguments": [1]}]',
        "[]",
        '[{"name": "get_weather", "arguments": "{broken"}]',
    ],
)
def test_invalid_blocks_are_refused(block: str) -> None:
    assert parse_calls(block, {"get_weather"}) is None


def test_a_broken_or_unclosed_block_reaches_the_client_as_text() -> None:
    broken = f'{OPEN}[{{"name": "nope"}}]{CLOSE}'
    assert _scan([broken]) == (broken, [])
    assert _scan(["a", OPEN, '[{"name"']) == (f'a{OPEN}[{{"name"', [])


def test_arguments_given_as_a_json_string_are_accepted() -> None:
    block = '{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}'
    assert parse_calls(block, {"get_weather"}) == [("get_weather", '{"city": "Rome"}')]


def test_history_is_written_as_text_and_tools_leave_the_request() -> None:
    request = parse_chat_request(
        {
            "model": "m",
            "tools": TOOLS,
            "tool_choice": "required",
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
            ],
        }
    )
    prompted = prompted_request(request)
    assert prompted.tools is None and prompted.tool_choice is None
    assert "tools" not in prompted.body
    system, user, assistant, result = (m.model_dump() for m in prompted.messages)
    assert system["role"] == "system"
    assert "get_weather" in system["content"] and "must call at least one tool" in system["content"]
    assert user["content"] == "Weather?"
    block = assistant["content"].removeprefix(OPEN).removesuffix(CLOSE)
    assert json.loads(block) == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert result["role"] == "user"
    assert result["content"] == "Tool result (get_weather, call call_1):\n18 C"
