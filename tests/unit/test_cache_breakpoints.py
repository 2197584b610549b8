"""Where ``prompt_caching = "auto"`` puts Anthropic's cache breakpoints in a translated request."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from aichat.core.schemas import parse_chat_request
from aichat.providers.anthropic_request import (
    MAX_BREAKPOINTS,
    cache_breakpoints,
    messages_request,
)


def marked(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The Messages request for a chat conversation, with its breakpoints placed."""
    chat = parse_chat_request({"model": "m", "messages": messages, **fields})
    request, _ = messages_request(chat, "claude", 1024)
    cache_breakpoints(request)
    return request


def marks(request: dict[str, Any]) -> int:
    """How many blocks, tools and system parts carry ``cache_control``."""
    blocks = [block for turn in request["messages"] for block in turn["content"]]
    parts = [*request.get("tools", []), *(request.get("system") or []), *blocks]
    return sum("cache_control" in part for part in parts)


def test_a_single_question_marks_only_its_turn() -> None:
    request = marked([{"role": "user", "content": "Hi"}])
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}
    ]
    assert "system" not in request and marks(request) == 1


def test_an_empty_text_part_is_passed_over_for_the_block_before_it() -> None:
    content = [{"type": "text", "text": "Look"}, {"type": "text", "text": ""}]
    request = marked([{"role": "user", "content": content}])
    first, last = request["messages"][0]["content"]
    assert "cache_control" in first and "cache_control" not in last


def test_tool_results_take_the_mark_of_the_turn_they_end() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    request = marked(
        [
            {"role": "user", "content": "Use f."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ]
    )
    result = request["messages"][-1]["content"][-1]
    assert result["type"] == "tool_result" and "cache_control" in result
    assert "cache_control" in request["messages"][0]["content"][-1]
    assert "cache_control" not in request["messages"][1]["content"][-1]  # the assistant's


@given(turns=st.integers(1, 12), system=st.booleans(), tools=st.integers(0, 3))
def test_never_more_than_anthropic_s_four_breakpoints(turns: int, system: bool, tools: int) -> None:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Be terse."}] if system else []
    messages += [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"Turn {n}"}
        for n in range(turns)
    ]
    declared = [
        {"type": "function", "function": {"name": f"f{n}", "parameters": {}}} for n in range(tools)
    ]
    request = marked(messages, **({"tools": declared} if declared else {}))
    # The last turn, and the user turn before it when there is one.
    users = (turns + 1) // 2
    earlier_users = users - 1 if turns % 2 else users  # an odd count ends with a user turn
    turn_marks = 1 + min(1, earlier_users)
    assert marks(request) == int(system) + int(tools > 0) + turn_marks <= MAX_BREAKPOINTS
