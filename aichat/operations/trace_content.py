"""Message contents for spans, in the GenAI conventions' shape, when an operator asks for them.

Only used with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` on
(``aichat.operations.trace_setup``): prompts and answers are often personal or secret, and the
trace receiver is another system with other readers. Decisions:

- Shapes: ``gen_ai.input.messages`` and ``gen_ai.output.messages`` as JSON text (the
  conventions allow a string where an attribute cannot hold structure): messages of
  ``{"role", "parts"}``, parts of type ``text``, ``reasoning``, ``tool_call`` and
  ``tool_call_response``; a non-text part is named by its type only (no images or audio).
  Instructions an API takes apart from the conversation (Messages' ``system``, Responses'
  ``instructions``) are ``gen_ai.system_instructions``, a list of parts, as the conventions
  ask; system messages inside a conversation stay in it.
- Bounded: the input's attributes together, and the output's, hold at most ``LIMIT``
  characters of text; past it, texts are cut and the rest of an answer is not looked at,
  so a long answer costs no more than a short one.
- An upstream's own words (Chat Completions chunks, Messages and Responses events) are
  parsed here for their text, as they pass; a request in another API than Chat Completions
  is read in its Chat Completions form: costs only an operator who asked for contents pays.
"""

from __future__ import annotations

from typing import Any

import orjson

from aichat.core.errors import APIError
from aichat.core.schemas import ChatMessage
from aichat.core.trace import Asked
from aichat.providers.base import (
    RawBody,
    RawChunks,
    RawCompletion,
    RawEvents,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
)
from aichat.providers.neutral import Reader, reader

LIMIT = 64 * 1024  # characters of message text per attribute


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _parts(message: ChatMessage) -> list[dict[str, Any]]:
    content = message.content
    parts: list[dict[str, Any]]
    if content is None:
        parts = []
    elif isinstance(content, str):
        parts = [{"type": "text", "content": content}]
    else:
        parts = [
            {"type": "text", "content": part.text or ""}
            if part.type == "text"
            else {"type": part.type}
            for part in content
        ]
    if message.role == "tool":
        response = "".join(part.get("content", "") for part in parts)
        parts = [{"type": "tool_call_response", "id": message.tool_call_id, "response": response}]
    for call in message.tool_calls or ():
        function = call.get("function") or {}
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": function.get("name"),
                "arguments": function.get("arguments"),
            }
        )
    return parts


# The body field of each API that holds instructions apart from the conversation (the
# first message of its Chat Completions form).
_INSTRUCTIONS = {"messages": "system", "responses": "instructions"}


def input_attributes(prompt: Asked) -> dict[str, str]:
    """``gen_ai.input.messages`` (the conversation) and ``gen_ai.system_instructions`` where
    the API takes them apart, cut at ``LIMIT`` together; none for a request that has no
    Chat Completions form."""
    try:
        chat = prompt.chat()
    except APIError:
        return {}
    budget = LIMIT
    messages = []
    for message in chat.messages:
        parts = _parts(message)
        for part in parts:
            for field in ("content", "arguments", "response"):
                text = part.get(field)
                if isinstance(text, str):
                    part[field] = text[: max(budget, 0)]
                    budget -= len(text)
        messages.append({"role": message.role, "parts": parts})
        if budget <= 0:
            break
    attributes = {}
    apart = _INSTRUCTIONS.get(prompt.api)
    if apart and prompt.body.get(apart) and messages and messages[0]["role"] == "system":
        attributes["gen_ai.system_instructions"] = _json(messages.pop(0)["parts"])
    attributes["gen_ai.input.messages"] = _json(messages)
    return attributes


class Output:
    """What an answer said, gathered from its events up to ``LIMIT`` characters."""

    __slots__ = ("_calls", "_chars", "_reader", "_reasoning", "_texts")

    def __init__(self) -> None:
        self._reader: Reader | None = None  # of a Messages or Responses answer
        self._texts: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._chars = 0

    def _add(self, into: list[str], text: str | None) -> None:
        if text and self._chars < LIMIT:
            into.append(text[: LIMIT - self._chars])
            self._chars += len(text)

    def _call(self, index: int, call_id: Any, name: Any, arguments: Any) -> None:
        call = self._calls.setdefault(index, {"type": "tool_call", "arguments": ""})
        if call_id:
            call["id"] = call_id
        if name:
            call["name"] = name
        if isinstance(arguments, str) and self._chars < LIMIT:
            call["arguments"] += arguments[: LIMIT - self._chars]
            self._chars += len(arguments)

    def see(self, event: object) -> None:
        """Take the text of one event, while under ``LIMIT``."""
        if self._chars >= LIMIT:
            return
        if isinstance(event, TextDelta):
            self._add(self._texts, event.text)
        elif isinstance(event, ReasoningDelta):
            self._add(self._reasoning, event.text)
        elif isinstance(event, ToolCallDelta):
            self._call(event.index, event.id, event.name, event.arguments)
        elif isinstance(event, RawChunks):
            for text in event.jsons:
                self._openai(text, "delta")
        elif isinstance(event, RawCompletion):
            self._openai(event.json, "message")
        elif isinstance(event, RawEvents | RawBody):
            self._native(event)

    def _native(self, event: RawEvents | RawBody) -> None:
        found = self._reader = self._reader or reader(event.api)
        try:
            inner = (
                found.stream(event.data)
                if isinstance(event, RawEvents)
                else found.whole(event.data)
            )
        except APIError:  # what the answer path will report; the span keeps what came before
            return
        for each in inner:
            self.see(each)

    def _openai(self, json_text: str, key: str) -> None:
        try:
            data = orjson.loads(json_text)
        except orjson.JSONDecodeError:
            return
        choices = data.get("choices") if isinstance(data, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            message = choice.get(key) if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                continue
            self._add(self._reasoning, message.get("reasoning_content"))
            self._add(self._texts, message.get("content"))
            for n, call in enumerate(message.get("tool_calls") or ()):
                if isinstance(call, dict):
                    function = call.get("function") or {}
                    index = call.get("index", n)
                    self._call(
                        index if isinstance(index, int) else n,
                        call.get("id"),
                        function.get("name"),
                        function.get("arguments"),
                    )

    def messages(self, finish_reason: str) -> str:
        """``gen_ai.output.messages``: one assistant message ending for ``finish_reason``."""
        parts: list[dict[str, Any]] = []
        if self._reasoning:
            parts.append({"type": "reasoning", "content": "".join(self._reasoning)})
        if self._texts:
            parts.append({"type": "text", "content": "".join(self._texts)})
        parts.extend(self._calls[index] for index in sorted(self._calls))
        return _json([{"role": "assistant", "parts": parts, "finish_reason": finish_reason}])
