"""An upstream of each of the three APIs that ends its stream the way a test tells it to.

One short answer ("Hello world") per API, as its own server streams it: Chat Completions
chunks and ``[DONE]``, Messages' named events and ``message_stop``, Responses' typed events
and ``response.completed``. ``Script`` says how it goes wrong: where it stops, what it sends
instead of its end, how it ends the connection. The answer's last event is ``events[-1]``
of each list, so a script can cut before it, replace it or add to it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

MODEL = "up-model"  # the upstream's own name of its model
PIECES = ["Hello", " world"]
OVERLOADED = "Overloaded"  # the message of every error event the upstream sends


def data_event(payload: dict[str, Any]) -> bytes:
    """A Chat Completions event: a ``data:`` line only."""
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def named_event(name: str, payload: dict[str, Any]) -> bytes:
    """An event with an ``event:`` line, as Messages and Responses send them."""
    return f"event: {name}\ndata: {json.dumps({'type': name, **payload})}\n\n".encode()


def chat_events(reason: str = "stop") -> list[bytes]:
    """Role, two pieces, the finish reason, usage and ``[DONE]``."""
    head = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": MODEL}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return data_event({**head, "choices": [choice]})

    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    return [
        chunk({"role": "assistant", "content": ""}),
        *[chunk({"content": piece}) for piece in PIECES],
        chunk({}, reason),
        data_event({**head, "choices": [], "usage": usage}),
        b"data: [DONE]\n\n",
    ]


def messages_events(reason: str = "end_turn") -> list[bytes]:
    """``message_start``, one text block in two deltas, the stop reason, ``message_stop``."""
    message: dict[str, Any] = {
        "id": "msg_up",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    block = {"index": 0, "content_block": {"type": "text", "text": ""}}
    ending = {"delta": {"stop_reason": reason, "stop_sequence": None}}
    return [
        named_event("message_start", {"message": message}),
        named_event("content_block_start", block),
        *[
            named_event(
                "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": p}}
            )
            for p in PIECES
        ],
        named_event("content_block_stop", {"index": 0}),
        named_event("message_delta", {**ending, "usage": {"output_tokens": 2}}),
        named_event("message_stop", {}),
    ]


def _response(status: str, output: list[Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": "resp_up",
        "object": "response",
        "created_at": 1,
        "status": status,
        "model": MODEL,
        "output": output,
        "error": None,
        "incomplete_details": None,
        "usage": None,
        **fields,
    }


def responses_events(reason: str = "completed") -> list[bytes]:
    """``response.created``, one message in two deltas, then ``response.{reason}``
    (``incomplete``: cut at ``max_output_tokens``)."""
    item = {"id": "msg_up", "type": "message", "role": "assistant", "status": "in_progress"}
    part = {"type": "output_text", "text": "".join(PIECES), "annotations": []}
    done = {**item, "status": "completed", "content": [part]}
    usage = {
        "input_tokens": 3,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 5,
    }
    why = {"reason": "max_output_tokens"} if reason == "incomplete" else None
    final = _response(reason, [done], usage=usage, incomplete_details=why)
    place = {"item_id": "msg_up", "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": _response("in_progress", [])}),
        ("response.output_item.added", {"output_index": 0, "item": {**item, "content": []}}),
        *[("response.output_text.delta", {**place, "delta": p}) for p in PIECES],
        ("response.output_item.done", {"output_index": 0, "item": done}),
        (f"response.{reason}", {"response": final}),
    ]
    return [
        named_event(name, {**payload, "sequence_number": n})
        for n, (name, payload) in enumerate(events)
    ]


# Each API's answer, by the reason it ends with: its usual one, or cut at the token limit.
ANSWERS: dict[str, Callable[[bool], list[bytes]]] = {
    "chat": lambda cut: chat_events("length" if cut else "stop"),
    "messages": lambda cut: messages_events("max_tokens" if cut else "end_turn"),
    "responses": lambda cut: responses_events("incomplete" if cut else "completed"),
}

# The events each API's servers report a failure with, mid-stream.
FAILURES: dict[str, list[bytes]] = {
    "chat": [
        data_event({"error": {"message": OVERLOADED, "type": "server_error", "code": None}}),
    ],
    "messages": [
        named_event("error", {"error": {"type": "overloaded_error", "message": OVERLOADED}}),
    ],
    "responses": [
        named_event(
            "response.failed",
            {
                "response": _response(
                    "failed", [], error={"code": "server_error", "message": OVERLOADED}
                ),
                "sequence_number": 4,
            },
        ),
        named_event(
            "error",
            {"code": "server_error", "message": OVERLOADED, "param": None, "sequence_number": 4},
        ),
    ],
}

# An event whose JSON is broken, under the name a delta of each API has.
BROKEN: dict[str, bytes] = {
    "chat": b'data: {"choices": [{"delta": \n\n',
    "messages": b'event: content_block_delta\ndata: {"type": "content_block_delta", \n\n',
    "responses": b'event: response.output_text.delta\ndata: {"type": \n\n',
}


@dataclass
class Script:
    """What the upstream writes (each item one write) and how it ends the connection:
    ``eof`` ends the body properly, ``abort`` cuts the connection, ``stall`` sends nothing
    more until the gateway gives up on it."""

    writes: list[bytes]
    end: Literal["eof", "abort", "stall"] = "eof"


@dataclass
class EndingUpstream:
    """Serves every API's path; ``script`` (given the API asked) says what it sends."""

    script: Callable[[str], Script] = lambda api: Script(ANSWERS[api](False))
    apis: list[str] = field(default_factory=list)  # the API of each request, in order
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)  # the gateway hung up

    async def _answer(self, request: web.Request, api: str) -> web.StreamResponse:
        await request.read()
        self.apis.append(api)
        script = self.script(api)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for write in script.writes:
                await response.write(write)
                await asyncio.sleep(0)  # each write its own read, as far as the loop allows
            if script.end == "stall":
                await asyncio.sleep(3600)
            if script.end == "abort":
                assert request.transport is not None
                request.transport.abort()
                return response
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled.set()
            raise
        return response

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "chat")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "messages")

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "responses")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/responses", self.responses)
        return app
