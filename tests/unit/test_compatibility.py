"""The compatibility rule, case by case: what the SDKs define is mapped, or dropped and named.

Each case is a request shape a real client sends (Claude Code, the Codex CLI, the official
SDKs): it must become a chat request that keeps its meaning, with whatever the chat path
cannot carry listed in ``dropped`` (the ``x-aichat-dropped-params`` header), never a 400.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from aichat.answer.capabilities import dropped_header
from aichat.core.errors import InvalidRequest
from aichat.inbound import anthropic_api, responses_api
from aichat.inbound.responses_tools import custom_input, map_tool_choice, map_tools


def _messages(**body: Any) -> anthropic_api.MessagesRequest:
    return anthropic_api.MessagesRequest.model_validate({"model": "m", "max_tokens": 9, **body})


def _responses(**body: Any) -> responses_api.ResponsesRequest:
    return responses_api.ResponsesRequest.model_validate({"model": "m", **body})


def test_a_system_turn_mid_conversation_stays_at_its_place() -> None:
    req = _messages(
        system="Be kind.",
        messages=[
            {"role": "user", "content": "say hi"},
            {"role": "system", "content": "Answer briefly."},
            {"role": "assistant", "content": "Hi."},
            {"role": "system", "content": [{"type": "text", "text": "Now in French."}]},
            {"role": "user", "content": "again"},
        ],
    )
    chat, dropped = anthropic_api.to_chat_request(req)
    assert [(m["role"], m["content"]) for m in chat.body["messages"]] == [
        ("system", "Be kind."),
        ("user", "say hi"),
        ("system", "Answer briefly."),
        ("assistant", "Hi."),
        ("system", "Now in French."),
        ("user", "again"),
    ]
    assert dropped == []


def test_a_system_turn_holds_text_only() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "http://x"}}
    req = _messages(
        messages=[{"role": "user", "content": "x"}, {"role": "system", "content": [image]}]
    )
    with pytest.raises(InvalidRequest) as info:
        anthropic_api.to_chat_request(req)
    assert info.value.param == "messages[1].content[0]"


def test_anthropic_server_and_schemaless_tools_are_dropped_and_named() -> None:
    req = _messages(
        messages=[{"role": "user", "content": "x"}],
        tools=[
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"name": "Read", "input_schema": {"type": "object"}, "cache_control": {"type": "x"}},
            {"type": "bash_20250124", "name": "bash"},
        ],
        tool_choice={"type": "auto"},
    )
    chat, dropped = anthropic_api.to_chat_request(req)
    assert [t["function"]["name"] for t in chat.body["tools"]] == ["Read"]
    assert dropped == ["cache_control", "tools.web_search_20250305", "tools.bash_20250124"]


_MARK = {"cache_control": {"type": "ephemeral"}}
_TEXT = {"type": "text", "text": "x"}


@pytest.mark.parametrize(
    "body",
    [
        {"system": [_TEXT, {**_TEXT, **_MARK}]},
        {"tools": [{"name": "Read", "input_schema": {"type": "object"}, **_MARK}]},
        {"messages": [{"role": "user", "content": [_TEXT, {**_TEXT, **_MARK}]}]},
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "R"}]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [_TEXT, {**_TEXT, **_MARK}],
                        }
                    ],
                },
            ]
        },
    ],
    ids=["system", "tool", "content-block", "tool-result-block"],
)
def test_a_cache_breakpoint_anywhere_is_named_as_dropped_once(body: dict[str, Any]) -> None:
    req = _messages(**{"messages": [{"role": "user", "content": "x"}], **body})
    assert anthropic_api.to_chat_request(req)[1] == ["cache_control"]


def test_a_request_without_cache_breakpoints_names_none() -> None:
    req = _messages(system=[_TEXT], messages=[{"role": "user", "content": [_TEXT]}])
    assert anthropic_api.to_chat_request(req)[1] == []


def test_a_request_whose_only_tools_are_server_tools_still_answers_without_tools() -> None:
    req = _messages(
        messages=[{"role": "user", "content": "x"}],
        tools=[{"type": "web_search_20250305", "name": "web_search"}],
        tool_choice={"type": "any"},
    )
    chat, dropped = anthropic_api.to_chat_request(req)
    assert "tools" not in chat.body
    assert "tool_choice" not in chat.body  # "required" with no tools would fail upstream
    assert dropped == ["tools.web_search_20250305"]


def test_earlier_thinking_and_server_tool_records_never_reach_the_upstream_as_text() -> None:
    req = _messages(
        messages=[
            {"role": "user", "content": "Search."},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "secret plan", "signature": "s"},
                    {"type": "redacted_thinking", "data": "xxx"},
                    {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
                    {"type": "web_search_tool_result", "tool_use_id": "s1", "content": []},
                    {"type": "text", "text": "Found it."},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "title": "Notes",
                        "source": {"type": "text", "media_type": "text/plain", "data": "abc"},
                    },
                    {
                        "type": "search_result",
                        "title": "T",
                        "source": "https://s",
                        "content": [{"type": "text", "text": "snippet"}],
                    },
                ],
            },
        ]
    )
    chat, dropped = anthropic_api.to_chat_request(req)
    messages = chat.body["messages"]
    assert messages[1] == {"role": "assistant", "content": "Found it."}
    assert "secret plan" not in json.dumps(messages)
    assert messages[2]["content"] == [
        {"type": "text", "text": "Notes\n\nabc"},
        {"type": "text", "text": "T (https://s)\nsnippet"},
    ]
    assert dropped == [
        "messages.content.server_tool_use",
        "messages.content.web_search_tool_result",
    ]


def test_a_pdf_document_is_refused_rather_than_silently_unread() -> None:
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf"}}
    req = _messages(messages=[{"role": "user", "content": [pdf]}])
    with pytest.raises(InvalidRequest) as info:
        anthropic_api.to_chat_request(req)
    assert info.value.param == "messages[0].content[0]"


def test_claude_code_settings_are_mapped_or_named() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    req = _messages(
        messages=[{"role": "user", "content": "x"}],
        thinking={"type": "adaptive", "display": "omitted"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        output_config={"effort": "max", "format": {"type": "json_schema", "schema": schema}},
    )
    chat, dropped = anthropic_api.to_chat_request(req)
    assert chat.body["reasoning_effort"] == "high"
    assert chat.body["response_format"]["json_schema"]["schema"] == schema
    assert "thinking" not in chat.body
    assert dropped == ["context_management"]


@pytest.mark.parametrize(
    ("thinking", "shown"),
    [
        (None, False),
        ({"type": "disabled"}, False),
        ({"type": "enabled", "budget_tokens": 2000}, True),
        ({"type": "adaptive"}, True),
        ({"type": "adaptive", "display": "omitted"}, False),
    ],
)
def test_thinking_blocks_are_returned_only_when_asked_for(
    thinking: dict[str, Any] | None, shown: bool
) -> None:
    req = _messages(messages=[{"role": "user", "content": "x"}], thinking=thinking)
    assert req.shows_thinking is shown


CODEX_TOOLS: list[dict[str, Any]] = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
    {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Sub-agents.",
        "tools": [
            {"type": "function", "name": "close_agent", "parameters": {"type": "object"}},
            {"type": "custom", "name": "spawn", "description": "Spawn one."},
        ],
    },
    {"type": "web_search", "external_web_access": False},
]


def test_namespace_tools_are_flattened_and_hosted_tools_dropped() -> None:
    tools, dropped = map_tools(CODEX_TOOLS)
    names = [tool["function"]["name"] for tool in tools.tools]
    assert names == ["exec_command", "multi_agent_v1__close_agent", "multi_agent_v1__spawn"]
    assert dropped == ["tools.web_search"]
    close = tools.client_tool("multi_agent_v1__close_agent")
    assert (close.name, close.namespace, close.custom) == ("close_agent", "multi_agent_v1", False)
    assert tools.client_tool("multi_agent_v1__spawn").custom
    assert tools.client_tool("exec_command").namespace is None


def test_flattened_names_never_collide_and_fit_openai_limits() -> None:
    long = "n" * 60
    declared = [
        {"type": "function", "name": "a__b"},
        {
            "type": "namespace",
            "name": "a",
            "description": "",
            "tools": [{"type": "function", "name": "b"}],
        },
        {
            "type": "namespace",
            "name": long,
            "description": "",
            "tools": [{"type": "function", "name": "x"}],
        },
        {
            "type": "namespace",
            "name": long,
            "description": "",
            "tools": [{"type": "function", "name": "y"}],
        },
    ]
    tools, _ = map_tools(declared)
    names = [tool["function"]["name"] for tool in tools.tools]
    assert len(set(names)) == len(names) == 4
    assert names[:2] == ["a__b", "a__b_2"]
    assert all(len(name) <= 64 for name in names)
    assert tools.flat_name("b", "a") == "a__b_2"
    assert tools.client_tool(names[3]).name == "y"


def test_a_custom_tool_is_a_one_string_function_and_its_call_comes_back_as_input() -> None:
    grammar = {"type": "grammar", "syntax": "lark", "definition": "start: WORD"}
    tools, _ = map_tools([{"type": "custom", "name": "apply_patch", "format": grammar}])
    function = tools.tools[0]["function"]
    assert function["parameters"]["required"] == ["input"]
    assert "lark grammar:\nstart: WORD" in function["description"]
    assert custom_input('{"input": "*** Begin Patch"}') == "*** Begin Patch"
    assert custom_input("not json") == "not json"  # a model that ignored the schema


def test_calls_in_input_are_renamed_as_their_tools_were() -> None:
    req = _responses(
        tools=CODEX_TOOLS,
        input=[
            {"role": "user", "content": "go"},
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "close_agent",
                "namespace": "multi_agent_v1",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "c1", "output": "closed"},
            {
                "type": "custom_tool_call",
                "call_id": "c2",
                "name": "spawn",
                "namespace": "multi_agent_v1",
                "input": "x",
            },
            {"type": "custom_tool_call_output", "call_id": "c2", "output": "spawned"},
            {"type": "web_search_call", "id": "ws", "status": "completed"},
            {"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": None},
        ],
    )
    chat, dropped, _ = responses_api.to_chat_request(req)
    messages = chat.body["messages"]
    calls = [m["tool_calls"][0]["function"] for m in messages if m.get("tool_calls")]
    assert calls == [
        {"name": "multi_agent_v1__close_agent", "arguments": "{}"},
        {"name": "multi_agent_v1__spawn", "arguments": '{"input": "x"}'},
    ]
    assert [m["content"] for m in messages if m["role"] == "tool"] == ["closed", "spawned"]
    assert dropped == ["tools.web_search", "input.web_search_call"]


@pytest.mark.parametrize(
    ("choice", "expected", "was_dropped", "kept"),
    [
        ("required", "required", False, 3),
        (
            {"type": "function", "name": "exec_command"},
            {"type": "function", "function": {"name": "exec_command"}},
            False,
            3,
        ),
        (
            {"type": "custom", "name": "spawn", "namespace": "multi_agent_v1"},
            {"type": "function", "function": {"name": "multi_agent_v1__spawn"}},
            False,
            3,
        ),
        (
            {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "exec_command"}],
            },
            "required",
            False,
            1,
        ),
        ({"type": "web_search_preview"}, None, True, 3),
    ],
)
def test_tool_choice_variants_are_mapped_or_dropped(
    choice: Any, expected: Any, was_dropped: bool, kept: int
) -> None:
    tools, _ = map_tools(CODEX_TOOLS)
    assert map_tool_choice(choice, tools) == (expected, was_dropped)
    assert len(tools.tools) == kept


def test_only_hosted_tools_means_no_tools_and_no_tool_choice_upstream() -> None:
    req = _responses(input="x", tools=[{"type": "web_search"}], tool_choice={"type": "web_search"})
    chat, dropped, _ = responses_api.to_chat_request(req)
    assert "tools" not in chat.body
    assert "tool_choice" not in chat.body
    assert dropped == ["tools.web_search", "tool_choice"]


def test_codex_settings_are_mapped_or_named() -> None:
    req = _responses(
        input="x",
        store=False,
        reasoning={"effort": "low", "summary": "auto"},
        text={"verbosity": "low"},
        include=["reasoning.encrypted_content"],
        prompt_cache_key="k",
        client_metadata={"a": "b"},
    )
    chat, dropped, _ = responses_api.to_chat_request(req)
    assert (chat.body["reasoning_effort"], chat.body["verbosity"]) == ("low", "low")
    assert chat.body["prompt_cache_key"] == "k"
    assert dropped == ["include", "client_metadata"]


def test_odd_namespaces_and_tools_are_read_without_a_crash() -> None:
    declared: Any = [{"type": "namespace", "name": "n", "description": "", "tools": [1, {}]}]
    tools, dropped = map_tools(declared)
    assert tools.tools == []
    assert dropped == ["tools.n.None", "tools.n.None"]
    assert tools.flat_name("x", {"not": "a string"}) == "x"


def test_the_dropped_header_cannot_be_broken_or_flooded_by_client_names() -> None:
    assert dropped_header(["tools.web_search", "a\r\nX-Evil: 1", "é" * 100]) == (
        "tools.web_search,a??X-Evil??1," + "?" * 64
    )
    many = dropped_header([f"f{i}" for i in range(100)])
    assert many.endswith(",f31,+68 more")
