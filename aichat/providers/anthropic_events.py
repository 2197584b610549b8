"""Anthropic Messages answers -> neutral provider events, for clients of another API.

Text, ``tool_use`` input (as JSON argument pieces) and thinking become ``TextDelta``,
``ToolCallDelta`` and ``ReasoningDelta``; the stop reason becomes OpenAI's finish reason;
usage comes from ``message_start`` and ``message_delta`` (Anthropic sends the input side
first and the output at the end). Signatures, citations, redacted thinking and server
tools' blocks have no place in the neutral events: what the upstream ran itself reaches
the client as the text it wrote about it.
"""

from __future__ import annotations

from typing import Any

import orjson

from aichat.core.errors import UpstreamError
from aichat.core.schemas import as_object
from aichat.providers.base import Event, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from aichat.providers.errors import event_error, json_object, malformed
from aichat.providers.reported import anthropic_usage
from aichat.providers.streaming import sse_events

# stop_reason -> finish_reason.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def failure(event: dict[str, Any]) -> UpstreamError:
    """The error of an ``error`` event or body; overloaded and rate-limit errors are retried."""
    details = as_object(event.get("error"))
    kind = details.get("type")
    return event_error(
        details,
        "anthropic",
        retryable=kind in ("overloaded_error", "rate_limit_error", "api_error"),
    )


def merged_usage(usage: Any, before: Usage | None) -> Usage | None:
    """Usage so far: ``usage`` (from ``message_start`` or ``message_delta``) over ``before``.

    ``message_delta`` carries the output count and, from newer servers, the input counts
    again; what it leaves out keeps its earlier value.
    """
    if not isinstance(usage, dict):
        return before
    if before is not None:
        earlier = {
            "input_tokens": before.prompt_tokens
            - before.cache_read_tokens
            - before.cache_write_tokens,
            "cache_read_input_tokens": before.cache_read_tokens,
            "cache_creation_input_tokens": before.cache_write_tokens,
            "output_tokens": before.completion_tokens,
        }
        usage = {**earlier, **{k: v for k, v in usage.items() if v is not None}}
    return anthropic_usage(usage) or before


class MessagesReader:
    """Reads one Messages answer, streamed or whole; ``reason`` once it has ended."""

    __slots__ = ("_tools", "_usage", "reason")

    def __init__(self) -> None:
        self.reason: str | None = None
        self._tools: dict[Any, int] = {}  # content block index -> tool call index
        self._usage: Usage | None = None

    def stream(self, data: bytes) -> list[Event]:
        """The neutral events of complete server-sent events ``data``."""
        events: list[Event] = []
        try:
            for _, payload in sse_events(data):
                self._event(json_object(payload, "an Anthropic event"), events)
        except (AttributeError, TypeError, KeyError):
            raise malformed("Anthropic") from None
        return events

    def _event(self, event: dict[str, Any], out: list[Event]) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            self._delta(event["index"], event["delta"], out)
        elif kind == "content_block_start":
            self._block(event["index"], event["content_block"], out, streamed=True)
        elif kind == "message_start":
            self._usage = merged_usage(event["message"].get("usage"), self._usage)
            if self._usage is not None:
                out.append(self._usage)
        elif kind == "message_delta":
            self._stop(event["delta"].get("stop_reason"))
            self._usage = merged_usage(event.get("usage"), self._usage)
            if self._usage is not None:
                out.append(self._usage)
        elif kind == "error":
            raise failure(event)

    def _stop(self, stop_reason: Any) -> None:
        if isinstance(stop_reason, str):
            self.reason = FINISH_REASONS.get(stop_reason, "stop")

    def _block(self, index: Any, block: dict[str, Any], out: list[Event], streamed: bool) -> None:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            out.append(TextDelta(block["text"]))
        elif kind == "thinking" and block.get("thinking"):
            out.append(ReasoningDelta(block["thinking"]))
        elif kind == "tool_use":
            call = self._tools[index] = len(self._tools)
            given = block.get("input")
            # Streamed, the input follows as JSON pieces; whole (or from a server that sends
            # it at once), it is here.
            arguments = "" if streamed and not given else orjson.dumps(given or {}).decode()
            out.append(ToolCallDelta(call, str(block["id"]), str(block["name"]), arguments))

    def _delta(self, index: Any, delta: dict[str, Any], out: list[Event]) -> None:
        kind = delta.get("type")
        if kind == "text_delta":
            out.append(TextDelta(delta["text"]))
        elif kind == "input_json_delta":
            out.append(ToolCallDelta(self._tools[index], arguments=delta["partial_json"]))
        elif kind == "thinking_delta":
            out.append(ReasoningDelta(delta["thinking"]))

    def whole(self, data: bytes) -> list[Event]:
        """The neutral events of a whole ``message``."""
        message = json_object(data, "an Anthropic message")
        events: list[Event] = []
        try:
            for index, block in enumerate(message.get("content") or ()):
                self._block(index, block, events, streamed=False)
        except (AttributeError, TypeError, KeyError):
            raise malformed("Anthropic") from None
        self._stop(message.get("stop_reason"))
        usage = anthropic_usage(message.get("usage"))
        return [*events, usage] if usage is not None else events
