"""Fake upstreams speaking Anthropic Messages and OpenAI Responses, on 127.0.0.1.

Their answers follow the official SDKs' types (the tests read them back with the SDKs in
strict mode): thinking blocks with signatures, cache read/creation counts, tool calls,
Responses' encrypted reasoning and a hosted tool's item. Each records the raw bytes of every
request and the raw bytes it sent, so tests can compare them byte for byte.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SIGNATURE = "EqQBCkYIBxgCKkBsigned-by-the-fake"
ENCRYPTED = "gAAAAABencrypted-reasoning-of-the-fake"


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


@dataclass
class Recorder:
    """What every fake records and how it can be told to fail."""

    status: int = 200
    error_body: dict[str, Any] = field(default_factory=dict)
    error_headers: dict[str, str] = field(default_factory=dict)
    fail_times: int = 0  # fail (with ``status``) this many requests, then answer
    drop_after: int | None = None  # cut the connection after this many events
    raw_requests: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # each answer's whole body
    paths: list[str] = field(default_factory=list)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The request bodies, decoded."""
        return [json.loads(raw) for raw in self.raw_requests]

    async def record(self, request: web.Request) -> web.Response | None:
        """Record a request; the error answer when it is to fail."""
        self.raw_requests.append(await request.read())
        self.headers.append(dict(request.headers))
        self.paths.append(request.path_qs)
        if self.status != 200 and (
            self.fail_times <= 0 or len(self.raw_requests) <= self.fail_times
        ):
            return web.json_response(
                self.error_body, status=self.status, headers=self.error_headers
            )
        return None

    async def send(self, request: web.Request, events: list[bytes]) -> web.StreamResponse:
        """Stream ``events``, cutting the connection after ``drop_after`` of them."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent = b""
        for n, event in enumerate(events):
            if n == self.drop_after:
                assert request.transport is not None
                request.transport.abort()
                self.sent.append(sent)
                return response
            sent += event
            await response.write(event)
            await asyncio.sleep(0)
        self.sent.append(sent)
        await response.write_eof()
        return response

    def whole(self, answer: dict[str, Any]) -> web.Response:
        """A whole JSON answer, recorded."""
        body = json.dumps(answer).encode()
        self.sent.append(body)
        return web.Response(body=body, content_type="application/json")


@dataclass
class FakeAnthropic(Recorder):
    """Anthropic's Messages API: text, or thinking + text + a tool call; cache counts."""

    text_pieces: list[str] = field(default_factory=lambda: ["Hello", " from", " Claude"])
    thinking: str = ""  # a thinking block with a signature first, when set
    tool: bool = False  # end with a tool_use block
    error_event_after: int | None = None  # an ``error`` event after this many events
    usage: dict[str, int] = field(
        default_factory=lambda: {
            "input_tokens": 3,
            "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 255,
            "output_tokens": 9,
        }
    )

    def error(self, status: int, kind: str, message: str) -> None:
        """Answer the next requests with Anthropic's error body."""
        self.status = status
        self.error_body = {"type": "error", "error": {"type": kind, "message": message}}

    def _blocks(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.thinking:
            blocks.append({"type": "thinking", "thinking": self.thinking, "signature": SIGNATURE})
        blocks.append({"type": "text", "text": "".join(self.text_pieces), "citations": None})
        if self.tool:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            )
        return blocks

    def _message(self, model: str, content: list[Any], stop: str | None) -> dict[str, Any]:
        return {
            "id": "msg_01fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {**self.usage, "output_tokens": self.usage["output_tokens"] if stop else 1},
        }

    def _events(self, model: str) -> list[bytes]:
        stop = "tool_use" if self.tool else "end_turn"
        start = self._message(model, [], None)
        events = [_sse("message_start", {"type": "message_start", "message": start})]
        events.append(_sse("ping", {"type": "ping"}))
        for index, block in enumerate(self._blocks()):
            kind = block["type"]
            empty = {
                "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                "text": {"type": "text", "text": ""},
                "tool_use": {**block, "input": {}},
            }[kind]
            events.append(
                _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": empty},
                )
            )
            if kind == "thinking":
                deltas = [
                    {"type": "thinking_delta", "thinking": block["thinking"]},
                    {"type": "signature_delta", "signature": SIGNATURE},
                ]
            elif kind == "text":
                deltas = [{"type": "text_delta", "text": piece} for piece in self.text_pieces]
            else:
                deltas = [
                    {"type": "input_json_delta", "partial_json": '{"city": '},
                    {"type": "input_json_delta", "partial_json": '"Paris"}'},
                ]
            for delta in deltas:
                data = {"type": "content_block_delta", "index": index, "delta": delta}
                events.append(_sse("content_block_delta", data))
            events.append(
                _sse("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        ending = {"stop_reason": stop, "stop_sequence": None}
        usage = {"output_tokens": self.usage["output_tokens"]}
        events.append(
            _sse("message_delta", {"type": "message_delta", "delta": ending, "usage": usage})
        )
        events.append(_sse("message_stop", {"type": "message_stop"}))
        if self.error_event_after is not None:
            error = {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            }
            events[self.error_event_after :] = [_sse("error", error)]
        return events

    async def handle(self, request: web.Request) -> web.StreamResponse:
        failed = await self.record(request)
        if failed is not None:
            return failed
        body = json.loads(self.raw_requests[-1])
        if body.get("stream"):
            return await self.send(request, self._events(body["model"]))
        stop = "tool_use" if self.tool else "end_turn"
        return self.whole(self._message(body["model"], self._blocks(), stop))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)  # Anthropic's own limit
        app.router.add_post("/v1/messages", self.handle)
        return app


@dataclass
class FakeResponses(Recorder):
    """OpenAI's Responses API: reasoning (encrypted when asked), a hosted web search, text,
    and a function call when ``tool`` is set; cached tokens in usage."""

    text_pieces: list[str] = field(default_factory=lambda: ["Hello", " from", " Responses"])
    reasoning: str = "Thinking it over."
    web_search: bool = True
    tool: bool = False
    fail_event: bool = False  # end with ``response.failed`` instead of completing
    usage: dict[str, Any] = field(
        default_factory=lambda: {
            "input_tokens": 256,
            "input_tokens_details": {"cached_tokens": 255, "cache_write_tokens": 0},
            "output_tokens": 12,
            "output_tokens_details": {"reasoning_tokens": 4},
            "total_tokens": 268,
        }
    )

    def _response(self, body: dict[str, Any], status: str, output: list[Any]) -> dict[str, Any]:
        done = status == "completed"
        return {
            "id": "resp_fake01",
            "object": "response",
            "created_at": 1_700_000_000,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body["model"],
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": self.usage if done else None,
            "user": None,
            "metadata": {},
        }

    def _items(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        encrypted = "reasoning.encrypted_content" in (body.get("include") or [])
        reasoning: dict[str, Any] = {
            "id": "rs_fake01",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": self.reasoning}],
        }
        if encrypted:
            reasoning["encrypted_content"] = ENCRYPTED
        items = [reasoning]
        if self.web_search:
            items.append(
                {
                    "id": "ws_fake01",
                    "type": "web_search_call",
                    "status": "completed",
                    "action": {"type": "search", "query": "weather Paris"},
                }
            )
        text = "".join(self.text_pieces)
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        items.append(
            {
                "id": "msg_fake01",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        )
        if self.tool:
            items.append(
                {
                    "id": "fc_fake01",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": "call_fake01",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris"}',
                }
            )
        return items

    def _events(self, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        started = self._response(body, "in_progress", [])
        events += [("response.created", {"response": started})]
        events += [("response.in_progress", {"response": started})]
        for index, item in enumerate(self._items(body)):
            place = {"item_id": item["id"], "output_index": index}
            kind = item["type"]
            opening = {**item, "status": "in_progress"} if "status" in item else dict(item)
            if kind == "reasoning":
                opening["summary"] = []
            elif kind == "message":
                opening["content"] = []
            elif kind == "function_call":
                opening["arguments"] = ""
            events.append(("response.output_item.added", {"output_index": index, "item": opening}))
            if kind == "reasoning":
                part = {"type": "summary_text", "text": ""}
                events.append(
                    (
                        "response.reasoning_summary_part.added",
                        {**place, "summary_index": 0, "part": part},
                    )
                )
                events.append(
                    (
                        "response.reasoning_summary_text.delta",
                        {**place, "summary_index": 0, "delta": self.reasoning},
                    )
                )
                events.append(
                    (
                        "response.reasoning_summary_text.done",
                        {**place, "summary_index": 0, "text": self.reasoning},
                    )
                )
                done_part = {"type": "summary_text", "text": self.reasoning}
                events.append(
                    (
                        "response.reasoning_summary_part.done",
                        {**place, "summary_index": 0, "part": done_part},
                    )
                )
            elif kind == "web_search_call":
                for stage in ("in_progress", "searching", "completed"):
                    events.append((f"response.web_search_call.{stage}", place))
            elif kind == "message":
                empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                events.append(
                    ("response.content_part.added", {**place, "content_index": 0, "part": empty})
                )
                for piece in self.text_pieces:
                    events.append(
                        (
                            "response.output_text.delta",
                            {**place, "content_index": 0, "delta": piece, "logprobs": []},
                        )
                    )
                text = "".join(self.text_pieces)
                events.append(
                    (
                        "response.output_text.done",
                        {**place, "content_index": 0, "text": text, "logprobs": []},
                    )
                )
                events.append(
                    (
                        "response.content_part.done",
                        {**place, "content_index": 0, "part": item["content"][0]},
                    )
                )
            elif kind == "function_call":
                for piece in ('{"city": ', '"Paris"}'):
                    events.append(
                        ("response.function_call_arguments.delta", {**place, "delta": piece})
                    )
                events.append(
                    (
                        "response.function_call_arguments.done",
                        {**place, "arguments": item["arguments"], "name": item["name"]},
                    )
                )
            events.append(("response.output_item.done", {"output_index": index, "item": item}))
        if self.fail_event:
            failed = self._response(body, "failed", [])
            failed["error"] = {"code": "server_error", "message": "The model broke down."}
            events.append(("response.failed", {"response": failed}))
        else:
            final = self._response(body, "completed", self._items(body))
            events.append(("response.completed", {"response": final}))
        return events

    async def handle(self, request: web.Request) -> web.StreamResponse:
        failed = await self.record(request)
        if failed is not None:
            return failed
        body = json.loads(self.raw_requests[-1])
        if not body.get("stream"):
            return self.whole(self._response(body, "completed", self._items(body)))
        events = [
            _sse(name, {"type": name, **data, "sequence_number": n})
            for n, (name, data) in enumerate(self._events(body))
        ]
        return await self.send(request, events)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/responses", self.handle)
        return app
