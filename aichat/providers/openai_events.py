"""OpenAI chat-completions JSON -> neutral provider events.

Chat Completions forwards an OpenAI-compatible upstream's chunks untouched (``RawChunks``,
``RawCompletion``); the other inbound APIs need what is inside them: text, tool-call pieces,
the finish reason, usage and reasoning (``reasoning_content`` or ``reasoning``). Only the
first choice is read: those APIs have one answer.
"""

from __future__ import annotations

from typing import Any

from aichat.providers.base import Event, ReasoningDelta, TextDelta, ToolCallDelta
from aichat.providers.errors import json_object, malformed
from aichat.providers.reported import openai_usage


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    for choice in data.get("choices") or ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return {}


def _usage(data: dict[str, Any]) -> list[Event]:
    usage = openai_usage(data)
    return [] if usage is None else [usage]


def _string(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"a string was expected, not {type(value).__name__}")


def _tool_calls(calls: Any) -> list[Event]:
    events: list[Event] = []
    for position, call in enumerate(calls or ()):
        function = call.get("function") or {}
        events.append(
            ToolCallDelta(
                index=int(call.get("index", position)),
                id=_string(call.get("id")),
                name=_string(function.get("name")),
                arguments=_string(function.get("arguments")) or "",
            )
        )
    return events


def _reasoning(message: dict[str, Any]) -> list[Event]:
    # vLLM and DeepSeek name it ``reasoning_content``, Ollama and OpenRouter ``reasoning``.
    for field in ("reasoning_content", "reasoning"):
        text = message.get(field)
        if isinstance(text, str) and text:
            return [ReasoningDelta(text)]
    return []


def _content(message: dict[str, Any]) -> list[Event]:
    text = message.get("content")
    texts: list[Event] = [TextDelta(text)] if isinstance(text, str) and text else []
    return _reasoning(message) + texts + _tool_calls(message.get("tool_calls"))


def _events(json_text: str, part: str) -> tuple[list[Event], str | None]:
    data = json_object(json_text, "an answer")
    try:
        choice = _first_choice(data)
        events = _content(choice.get(part) or {}) + _usage(data)
        return events, _string(choice.get("finish_reason"))
    except (AttributeError, TypeError, ValueError, OverflowError):
        # A field of the wrong JSON type: the upstream broke OpenAI's format, which is an
        # upstream failure (502, or an error event), not a fault of the gateway (500).
        raise malformed("OpenAI") from None


def chunk_events(json_text: str) -> tuple[list[Event], str | None]:
    """The events inside one ``chat.completion.chunk``, and its ``finish_reason`` if any."""
    return _events(json_text, "delta")


def completion_events(json_text: str) -> tuple[list[Event], str | None]:
    """The events of a whole ``chat.completion``, and its ``finish_reason``."""
    return _events(json_text, "message")
