"""OpenAI Responses answers -> neutral provider events, for clients of another API.

Output text (and refusals) become ``TextDelta``, reasoning summaries and reasoning text
``ReasoningDelta``, ``function_call`` items ``ToolCallDelta``. A ``custom_tool_call``'s free
text input is carried as the JSON arguments ``{"input": ...}``, escaped piece by piece, as
aichat declares custom tools to Chat Completions upstreams. Items of tools the upstream ran
itself (web search, file search, ...) have no place in the neutral events. The finish reason
comes from the final event: ``tool_calls`` after a call, ``length`` for an answer cut at
``max_output_tokens``; ``response.failed`` and ``error`` are failures.
"""

from __future__ import annotations

from typing import Any

import orjson

from aichat.core.errors import UpstreamError
from aichat.core.schemas import as_object
from aichat.providers.base import Event, ReasoningDelta, TextDelta, ToolCallDelta
from aichat.providers.errors import event_error, json_object, malformed
from aichat.providers.reported import responses_usage
from aichat.providers.streaming import sse_events

_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}
_REASONING_DELTAS = frozenset(
    {"response.reasoning_summary_text.delta", "response.reasoning_text.delta"}
)
_CALLS = frozenset({"function_call", "custom_tool_call"})


def failure(event: dict[str, Any]) -> UpstreamError:
    """The error of an ``error`` event or a failed response (``response.failed``)."""
    response = event.get("response")
    # ``response.failed`` holds the error in its response; an ``error`` event is one itself.
    details = as_object(response.get("error")) if isinstance(response, dict) else event
    code = details.get("code")
    return event_error(
        details, "responses", retryable=code in ("server_error", "rate_limit_exceeded")
    )


def _quoted_piece(text: str) -> str:
    """``text`` escaped as the inside of a JSON string."""
    return orjson.dumps(text).decode()[1:-1]


class ResponsesReader:
    """Reads one Responses answer, streamed or whole; ``reason`` once it has ended."""

    __slots__ = ("_calls", "_custom", "_streamed", "reason")

    def __init__(self) -> None:
        self.reason: str | None = None
        self._calls: dict[Any, int] = {}  # item id -> tool call index
        self._custom: set[Any] = set()  # the ids of custom tool calls
        self._streamed: set[Any] = set()  # calls whose arguments came in pieces

    def stream(self, data: bytes) -> list[Event]:
        """The neutral events of complete server-sent events ``data``."""
        events: list[Event] = []
        try:
            for _, payload in sse_events(data):
                self._event(json_object(payload, "a Responses event"), events)
        except (AttributeError, TypeError, KeyError):
            raise malformed("the Responses API") from None
        return events

    def _event(self, event: dict[str, Any], out: list[Event]) -> None:
        kind = event.get("type")
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            out.append(TextDelta(event["delta"]))
        elif kind in _REASONING_DELTAS:
            out.append(ReasoningDelta(event["delta"]))
        elif kind == "response.function_call_arguments.delta":
            self._streamed.add(event["item_id"])
            out.append(ToolCallDelta(self._calls[event["item_id"]], arguments=event["delta"]))
        elif kind == "response.custom_tool_call_input.delta":
            piece = _quoted_piece(event["delta"])
            out.append(ToolCallDelta(self._calls[event["item_id"]], arguments=piece))
        elif kind == "response.output_item.added":
            self._call(event["item"], out, streamed=True)
        elif kind == "response.output_item.done":
            self._call_done(event["item"], out)
        elif kind in ("response.completed", "response.incomplete"):
            self._end(event["response"], out)
        elif kind in ("response.failed", "error"):
            raise failure(event)

    def _call(self, item: dict[str, Any], out: list[Event], streamed: bool) -> None:
        kind = item.get("type")
        if kind not in _CALLS:
            return
        index = self._calls[item.get("id")] = len(self._calls)
        if kind == "function_call":
            arguments = "" if streamed else str(item.get("arguments") or "")
        elif streamed:
            self._custom.add(item.get("id"))
            arguments = '{"input":"'
        else:
            arguments = orjson.dumps({"input": str(item.get("input") or "")}).decode()
        out.append(ToolCallDelta(index, str(item["call_id"]), str(item["name"]), arguments))

    def _call_done(self, item: dict[str, Any], out: list[Event]) -> None:
        key = item.get("id")
        if key in self._custom:
            out.append(ToolCallDelta(self._calls[key], arguments='"}'))
        elif key in self._calls and key not in self._streamed and item.get("arguments"):
            # A server that sends a call's arguments whole, with the finished item.
            out.append(ToolCallDelta(self._calls[key], arguments=str(item["arguments"])))

    def _end(self, response: dict[str, Any], out: list[Event]) -> None:
        details = response.get("incomplete_details")
        why = details.get("reason") if isinstance(details, dict) else None
        if response.get("status") == "incomplete" and why in _INCOMPLETE:
            self.reason = _INCOMPLETE[why]
        else:
            self.reason = "tool_calls" if self._calls else "stop"
        usage = responses_usage(response.get("usage"))
        if usage is not None:
            out.append(usage)

    def whole(self, data: bytes) -> list[Event]:
        """The neutral events of a whole ``response``."""
        response = json_object(data, "a response")
        if response.get("status") == "failed":
            raise failure({"response": response})
        events: list[Event] = []
        try:
            for item in response.get("output") or ():
                self._item(item, events)
        except (AttributeError, TypeError, KeyError):
            raise malformed("the Responses API") from None
        self._end(response, events)
        return events

    def _item(self, item: dict[str, Any], out: list[Event]) -> None:
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                text = (
                    part.get("text") if part.get("type") == "output_text" else part.get("refusal")
                )
                if isinstance(text, str) and text:
                    out.append(TextDelta(text))
        elif kind == "reasoning":
            parts = [*(item.get("summary") or ()), *(item.get("content") or ())]
            text = "\n\n".join(str(part.get("text") or "") for part in parts)
            if text:
                out.append(ReasoningDelta(text))
        else:
            self._call(item, out, streamed=False)
