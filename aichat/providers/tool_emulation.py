"""Tool calling for upstreams that only write text, by prompt and parser (opt-in per model).

The tool definitions go into a system message with a strict output format: a call is a
``<tool_calls>`` block holding a JSON list of ``{"name", "arguments"}``. Earlier calls and
their results are written back into the conversation as text in the same format. The answer
streams through ``CallScanner``: text before a block is passed on at once (only a possible
start of the marker is held back), the block itself is held until it closes and is then
checked against the declared tools. A valid block becomes real ``ToolCallDelta`` events and
``finish_reason: "tool_calls"``; anything else reaches the client as the plain text it was,
never as a broken call. Text after a valid block is dropped: the model was told to stop there.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from aichat.core.ids import new_call_id
from aichat.core.prompt import Prompt
from aichat.core.schemas import ChatCompletionRequest, ChatMessage, parse_chat_request
from aichat.providers.base import Event, Finish, TextDelta, ToolCallDelta, Wrapper
from aichat.providers.markers import held_back

OPEN, CLOSE = "<tool_calls>", "</tool_calls>"

_FORMAT = f"""To call tools, reply with this block and nothing else, one entry per call:
{OPEN}
[{{"name": "<tool name>", "arguments": {{<the arguments, a JSON object>}}}}]
{CLOSE}
The block must be valid JSON between the two markers. Tool results come back in a later \
message starting "Tool result". If no tool is needed, answer in plain text without the block."""

# Fields that describe tools to an upstream that has none: they become the prompt instead.
_TOOL_FIELDS = ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls")


def _tool_specs(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = []
    for tool in tools:
        function = _function(tool)
        keys = ("name", "description", "parameters")
        specs.append({k: function[k] for k in keys if function.get(k) is not None})
    return specs


def _choice_rule(choice: str | dict[str, Any] | None) -> str:
    if choice == "required":
        return "You must call at least one tool now."
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return f'You must call the tool "{name}" now.'
    return "Call a tool only when it helps answer."


def tool_prompt(request: ChatCompletionRequest) -> str:
    """The system text that declares ``request``'s tools and the strict call format."""
    specs = json.dumps(_tool_specs(request.tools or []), ensure_ascii=False)
    return f"You can call these tools:\n{specs}\n{_choice_rule(request.tool_choice)}\n{_FORMAT}"


def _function(call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    return function if isinstance(function, dict) else {}


def calls_block(calls: list[dict[str, Any]]) -> str:
    """Earlier tool calls written back in the format the model was asked to use."""
    entries = []
    for call in calls:
        function = _function(call)
        arguments = function.get("arguments") or "{}"
        with contextlib.suppress(TypeError, ValueError):  # else written back as it came
            arguments = json.loads(arguments)
        entries.append({"name": function.get("name"), "arguments": arguments})
    return f"{OPEN}\n{json.dumps(entries, ensure_ascii=False)}\n{CLOSE}"


def _message_text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return "\n".join(part.text for part in message.content if part.text is not None)
    return message.content or ""


def text_messages(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The conversation with tool calls and results written as text, tools declared first."""
    names: dict[str, str] = {}
    messages: list[dict[str, Any]] = []
    if request.tools and request.tool_choice != "none":
        messages.append({"role": "system", "content": tool_prompt(request)})
    for message in request.messages:
        if message.role == "assistant" and message.tool_calls:
            for call in message.tool_calls:
                names[str(call.get("id") or "")] = str(_function(call).get("name"))
            text = "\n".join(
                filter(None, [_message_text(message), calls_block(message.tool_calls)])
            )
            messages.append({"role": "assistant", "content": text})
        elif message.role in ("tool", "function"):
            call_id = message.tool_call_id or ""
            name = names.get(call_id) or message.name or "tool"
            result = f"Tool result ({name}, call {call_id}):\n{_message_text(message)}"
            messages.append({"role": "user", "content": result})
        else:
            messages.append(message.model_dump(exclude_none=True))
    return messages


def prompted_request(request: ChatCompletionRequest) -> ChatCompletionRequest:
    """``request`` for a text-only upstream: tools in the prompt, no tool fields left."""
    body = {k: v for k, v in request.body.items() if k not in _TOOL_FIELDS}
    return parse_chat_request({**body, "messages": text_messages(request)})


def parse_calls(block: str, allowed: set[str]) -> list[tuple[str, str]] | None:
    """``(name, arguments JSON)`` of each call in a block, or None if any entry is invalid."""
    try:
        entries = json.loads(block)
    except ValueError:
        return None
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not entries:
        return None
    calls = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("name") not in allowed:
            return None
        arguments = entry.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        calls.append((entry["name"], json.dumps(arguments, ensure_ascii=False)))
    return calls


class CallScanner:
    """Splits an answer streamed in pieces into plain text and one tool-call block."""

    __slots__ = ("_block", "_held", "_in_block")

    def __init__(self) -> None:
        self._held = ""
        self._block: list[str] = []
        self._in_block = False

    def feed(self, piece: str) -> str:
        """The text that can be passed on now (possibly empty)."""
        if self._in_block:
            self._block.append(piece)
            return ""
        text = self._held + piece
        start = text.find(OPEN)
        if start >= 0:
            self._in_block = True
            self._block.append(text[start + len(OPEN) :])
            self._held = ""
            return text[:start]
        keep = held_back(text, OPEN)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def finish(self, allowed: set[str]) -> tuple[str, list[tuple[str, str]]]:
        """The rest of the text and the valid calls, once the answer has ended."""
        if not self._in_block:
            return self._held, []
        raw = "".join(self._block)
        body, closed, _ = raw.partition(CLOSE)
        calls = parse_calls(body, allowed) if closed else None
        if calls is None:
            return OPEN + raw, []
        return "", calls


def needs_emulation(request: ChatCompletionRequest) -> bool:
    """Whether ``request`` declares tools or carries tool calls or results."""
    return bool(request.tools or request.functions) or any(
        message.tool_calls or message.role in ("tool", "function") for message in request.messages
    )


class EmulatedTools(Wrapper):
    """Wraps a text-only provider so that it can answer with tool calls."""

    async def stream(self, prompt: Prompt, upstream_model: str) -> AsyncGenerator[Event, None]:
        """The inner provider's events, with a tool-call block turned into tool calls."""
        request = prompt.chat()
        if not needs_emulation(request):
            async with aclosing(self._inner.stream(prompt, upstream_model)) as events:
                async for event in events:
                    yield event
            return
        allowed = {spec.get("name", "") for spec in _tool_specs(request.tools or [])}
        scanner = CallScanner()
        prompted = Prompt.of_chat(prompted_request(request), b"")
        async with aclosing(self._inner.stream(prompted, upstream_model)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    text = scanner.feed(event.text)
                    if text:
                        yield TextDelta(text)
                elif isinstance(event, Finish):
                    rest, calls = scanner.finish(allowed)
                    if rest:
                        yield TextDelta(rest)
                    for index, (name, arguments) in enumerate(calls):
                        yield ToolCallDelta(index, new_call_id(), name, arguments)
                    yield Finish("tool_calls" if calls else event.reason)
                else:
                    yield event
