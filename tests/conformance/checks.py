"""Reading the conformance vectors: SSE framing, exact field sets, event order, answers.

Everything here works on plain JSON (dicts), whether it came off the wire or from an SDK
object's ``to_dict()``, so one reader serves every client of an API.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).parent / "vectors"


@cache
def load(name: str) -> Any:
    """One vectors file, decoded."""
    return json.loads((VECTORS / f"{name}.json").read_text())


def check_fields(
    api: str, name: str, value: dict[str, Any], path: str = "", table: str = "objects"
) -> None:
    """Assert ``value`` has exactly the fields schema entry ``name`` allows, recursively.

    ``table`` is ``events`` for a stream event, ``objects`` for a body or nested object.
    """
    schema = load("schemas")[api]
    spec = schema[table].get(name)
    assert spec is not None, f"{path or name}: no schema entry {name!r} in {table}"
    if "same_as" in spec:
        spec = schema["objects"][spec["same_as"]]
    keys, required = set(value), set(spec["required"])
    allowed = required | set(spec.get("optional", ()))
    assert required <= keys, f"{path or name}: missing {sorted(required - keys)}"
    assert keys <= allowed, f"{path or name}: unexpected {sorted(keys - allowed)}"
    for key, target in spec.get("nested", {}).items():
        field_name = key.removesuffix("[]")
        found = value.get(field_name)
        items = found if key.endswith("[]") else [found]
        for i, item in enumerate(items or ()):
            if isinstance(item, dict):
                where = f"{path or name}.{field_name}" + (f"[{i}]" if key.endswith("[]") else "")
                check_fields(api, target.format(type=item.get("type")), item, where)


def parse_sse(raw: bytes, named: bool) -> list[tuple[str, Any]]:
    """``(event name, data)`` of every event; asserts the framing each API uses."""
    text = raw.decode()
    assert text.endswith("\n\n"), text[-80:]
    events = []
    for block in text.split("\n\n")[:-1]:
        lines = block.split("\n")
        if named:
            assert len(lines) == 2 and lines[0].startswith("event: "), block
            data = json.loads(lines[1].removeprefix("data: "))
            assert data["type"] == lines[0].removeprefix("event: "), block
            events.append((data["type"], data))
            continue
        assert len(lines) == 1 and lines[0].startswith("data: "), block
        payload = lines[0].removeprefix("data: ")
        if payload == "[DONE]":
            events.append(("[DONE]", {}))
        else:
            data = json.loads(payload)
            events.append(("error" if "error" in data else data["object"], data))
    return events


def matches(names: list[str], pattern: list[str]) -> bool:
    """Whether event ``names`` follow ``pattern`` (a trailing ``+``: one or more, ``*``: any)."""
    parts = []
    for step in pattern:
        name, repeat = (step[:-1], step[-1]) if step[-1] in "+*" else (step, "")
        parts.append(f"(?:{re.escape(name)}\n){repeat}")
    return re.fullmatch("".join(parts), "".join(f"{n}\n" for n in names)) is not None


@dataclass
class Outcome:
    """What a client saw: the answer, how it ended, or how it failed."""

    status: int = 200
    text: str = ""
    tool: dict[str, Any] | None = None
    ending: str | None = None  # the API's success ending: finish/stop reason or status
    stream_error: bool = False
    events: list[str] = field(default_factory=list)

    def call(self, name: str | None, arguments: str | dict[str, Any]) -> None:
        """Record the tool call (arguments as JSON text or already decoded)."""
        decoded = json.loads(arguments) if isinstance(arguments, str) else arguments
        self.tool = {"name": name, "arguments": decoded}


def read_chat(outcome: Outcome, events: list[dict[str, Any]]) -> None:
    """A chat-completions stream's answer."""
    name, arguments = None, ""
    for event in events:
        if "error" in event:
            outcome.stream_error = True
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            outcome.text += delta.get("content") or ""
            for call in delta.get("tool_calls") or ():
                name = call["function"].get("name") or name
                arguments += call["function"].get("arguments") or ""
            outcome.ending = choice.get("finish_reason") or outcome.ending
    if name:
        outcome.call(name, arguments)
    if outcome.stream_error:
        assert outcome.ending is None, "a failed stream must not carry a finish reason"


def read_chat_body(outcome: Outcome, body: dict[str, Any]) -> None:
    """A whole chat completion's answer."""
    choice = body["choices"][0]
    outcome.text = choice["message"].get("content") or ""
    for call in choice["message"].get("tool_calls") or ():
        outcome.call(call["function"]["name"], call["function"]["arguments"])
    outcome.ending = choice["finish_reason"]


def read_responses_body(outcome: Outcome, body: dict[str, Any]) -> None:
    """A whole Response object's answer."""
    for item in body["output"]:
        if item["type"] == "message":
            outcome.text += "".join(part["text"] for part in item["content"])
        elif item["type"] == "function_call":
            outcome.call(item["name"], item["arguments"])
    outcome.ending = body["status"]


def read_responses(outcome: Outcome, events: list[dict[str, Any]]) -> None:
    """A Responses stream's answer; sequence numbers must count up from 0."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        kind = event["type"]
        if kind == "response.output_text.delta":
            outcome.text += event["delta"]
        elif kind == "response.output_item.done" and event["item"]["type"] == "function_call":
            outcome.call(event["item"]["name"], event["item"]["arguments"])
        elif kind in ("response.completed", "response.incomplete"):
            read_responses_body(Outcome(), event["response"])
            outcome.ending = event["response"]["status"]
        elif kind in ("error", "response.failed"):
            outcome.stream_error = True


def read_messages_body(outcome: Outcome, body: dict[str, Any]) -> None:
    """A whole Anthropic message's answer."""
    for block in body["content"]:
        if block["type"] == "text":
            outcome.text += block["text"]
        elif block["type"] == "tool_use":
            outcome.call(block["name"], block["input"])
    outcome.ending = body["stop_reason"]


def read_messages(outcome: Outcome, events: list[dict[str, Any]]) -> None:
    """An Anthropic stream's answer: text and tool input assembled from the deltas."""
    name, arguments = None, ""
    for event in events:
        kind = event["type"]
        if kind == "content_block_start" and event["content_block"]["type"] == "tool_use":
            name = event["content_block"]["name"]
        elif kind == "content_block_delta":
            delta = event["delta"]
            outcome.text += delta.get("text", "")
            arguments += delta.get("partial_json", "")
        elif kind == "message_delta":
            outcome.ending = event["delta"]["stop_reason"]
        elif kind == "error":
            outcome.stream_error = True
    if name:
        outcome.call(name, arguments or "{}")
    if outcome.stream_error:
        assert outcome.ending is None, "a failed stream must not carry a stop reason"


READERS = {
    "chat": (read_chat_body, read_chat),
    "responses": (read_responses_body, read_responses),
    "messages": (read_messages_body, read_messages),
}
