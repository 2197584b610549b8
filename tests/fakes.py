"""A real aichats upstream on 127.0.0.1 whose behaviour each test sets."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def aichats_body(pieces: list[str]) -> bytes:
    """The bytes the service sends for ``pieces``: one ``data:`` line each, newlines escaped."""
    return "".join(f"data: {p.replace(chr(10), chr(92) + 'n')}\n\n" for p in pieces).encode()


@dataclass
class FakeAichats:
    """Behaviour knobs for the fake; change them between requests."""

    pieces: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    raw: bytes | None = None  # exact body to send instead of ``pieces``
    chunk_size: int | None = None  # cut the body into writes of this many bytes
    status: int = 200
    error_headers: dict[str, str] = field(default_factory=dict)
    delay_before: float = 0.0  # before the response headers
    delay_between: float = 0.0  # between writes
    stall_after: int | None = None  # after this many writes, never send anything again
    drop_after: int | None = None  # after this many writes, cut the connection
    gate: asyncio.Event | None = None  # after the first write, wait for this before the rest
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def writes(self) -> list[bytes]:
        body = self.raw if self.raw is not None else aichats_body(self.pieces)
        if not self.chunk_size:
            return [body]
        return [body[i : i + self.chunk_size] for i in range(0, len(body), self.chunk_size)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        self.headers.append(dict(request.headers))
        if self.delay_before:
            await asyncio.sleep(self.delay_before)
        if self.status != 200:
            return web.Response(
                status=self.status, text="upstream says no", headers=self.error_headers
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for n, chunk in enumerate(self.writes()):
                if n == self.stall_after:
                    await asyncio.sleep(3600)
                if n == self.drop_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                await response.write(chunk)
                if n == 0 and self.gate is not None:
                    await self.gate.wait()
                if self.delay_between:
                    await asyncio.sleep(self.delay_between)
            await response.write_eof()
            self.finished.set()
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled.set()
            raise
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/chat/send2/", self.handle)
        return app


def sse_events(raw: bytes) -> list[str]:
    """Split a raw SSE body into its ``data:`` payloads, checking the framing on the way."""
    assert raw.endswith(b"\n\n"), raw[-50:]
    events = []
    for block in raw.decode().split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        events.append(block[len("data: ") :])
    return events


def json_events(raw: bytes) -> list[Any]:
    """The decoded JSON of every event except a final ``[DONE]``."""
    return [json.loads(e) for e in sse_events(raw) if e != "[DONE]"]


TOOL_CALL_CHUNKS: list[dict[str, Any]] = [
    {
        "index": 0,
        "delta": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ],
        },
        "finish_reason": None,
    },
    {
        "index": 0,
        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        "finish_reason": None,
    },
    {
        "index": 0,
        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]},
        "finish_reason": None,
    },
    {"index": 0, "delta": {}, "finish_reason": "tool_calls"},
]


@dataclass
class FakeOpenAI:
    """An OpenAI-compatible upstream: text or tool-call streams, failures on demand."""

    text_pieces: list[str] = field(default_factory=lambda: ["Hi", " from", " upstream"])
    tool_calls: bool = False  # answer with TOOL_CALL_CHUNKS instead of text
    tool_name: str = "get_weather"  # the name the tool call uses
    reasoning_pieces: list[str] = field(default_factory=list)  # ``reasoning_content`` first
    status: int = 200
    error_body: dict[str, Any] = field(
        default_factory=lambda: {
            "error": {
                "message": "Rate limit reached",
                "type": "requests",
                "code": "rate_limit",
                "param": None,
            }
        }
    )
    error_headers: dict[str, str] = field(default_factory=dict)
    fail_times: int = 0  # fail (with ``status``) this many requests, then answer normally
    drop_after: int | None = None  # cut the connection after this many chunks
    stall_after: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # every data payload streamed
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    end_delay: float = 0.0  # seconds between ``[DONE]`` and the end of the body
    connections: set[object] = field(default_factory=set)  # client address of each request
    # Hang up, unanswered, on a request that comes on a connection that served a stream: as
    # llama.cpp closes one after a stream though its headers say Keep-Alive, and a request
    # sent before the close arrives gets no answer.
    close_after_stream: bool = False
    streamed_on: set[object] = field(default_factory=set)  # connections hung up on next
    hung_up: int = 0
    models: list[str] = field(default_factory=lambda: ["llama3.1", "qwen2.5"])  # GET /v1/models
    listing: list[dict[str, Any]] | None = None  # GET /v1/models' data as given, if set
    models_status: int = 200
    report_usage: bool = True  # False: no usage anywhere, as some servers answer
    usage: dict[str, Any] = field(
        default_factory=lambda: {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    )

    def chunks(self, model: str, include_usage: bool) -> list[dict[str, Any]]:
        base = {
            "id": "chatcmpl-up",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        if self.tool_calls:
            choices = copy.deepcopy(TOOL_CALL_CHUNKS)
            choices[0]["delta"]["tool_calls"][0]["function"]["name"] = self.tool_name
        else:
            choices = [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ]
            choices += [
                {"index": 0, "delta": {"reasoning_content": p}, "finish_reason": None}
                for p in self.reasoning_pieces
            ]
            choices += [
                {"index": 0, "delta": {"content": p}, "logprobs": None, "finish_reason": None}
                for p in self.text_pieces
            ]
            choices.append({"index": 0, "delta": {}, "finish_reason": "stop"})
        out = [{**base, "choices": [choice]} for choice in choices]
        if include_usage and self.report_usage:
            out.append(
                {
                    **base,
                    "choices": [],
                    "usage": self.usage,
                }
            )
        return out

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert request.transport is not None
        peer = request.transport.get_extra_info("peername")
        if peer in self.streamed_on:
            self.hung_up += 1
            request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        self.connections.add(peer)
        if self.status != 200 and (self.fail_times <= 0 or len(self.requests) <= self.fail_times):
            return web.json_response(
                self.error_body, status=self.status, headers=self.error_headers
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = self.chunks(body["model"], include_usage)
        if not body.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(self.text_pieces),
                "refusal": None,
            }
            finish_reason = "stop"
            if self.reasoning_pieces:
                message["reasoning_content"] = "".join(self.reasoning_pieces)
            if self.tool_calls:
                call = TOOL_CALL_CHUNKS[0]["delta"]["tool_calls"][0]
                arguments = "".join(
                    c["delta"]["tool_calls"][0]["function"]["arguments"]
                    for c in TOOL_CALL_CHUNKS[:-1]
                )
                function = {"name": self.tool_name, "arguments": arguments}
                tool_call = {"id": call["id"], "type": "function", "function": function}
                message.update(content=None, tool_calls=[tool_call])
                finish_reason = "tool_calls"
            completion = {
                "id": "chatcmpl-up",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body["model"],
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": self.usage,
            }
            if not self.report_usage:
                del completion["usage"]
            if self.drop_after is not None:
                # Headers and the start of the body, then a broken connection.
                partial = web.StreamResponse(headers={"Content-Type": "application/json"})
                await partial.prepare(request)
                await partial.write(json.dumps(completion).encode()[:20])
                assert request.transport is not None
                request.transport.abort()
                return partial
            return web.json_response(completion)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for n, chunk in enumerate(chunks):
            if n == self.stall_after:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    self.cancelled.set()
                    raise
            if n == self.drop_after:
                assert request.transport is not None
                request.transport.abort()
                return response
            payload = json.dumps(chunk).encode()
            self.sent.append(payload)
            await response.write(b"data: " + payload + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await asyncio.sleep(self.end_delay)
        await response.write_eof()
        if self.close_after_stream:
            self.streamed_on.add(peer)
        return response

    async def list_models(self, request: web.Request) -> web.Response:
        if self.models_status != 200:
            return web.json_response(self.error_body, status=self.models_status)
        data = self.listing or [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_get("/v1/models", self.list_models)
        return app
