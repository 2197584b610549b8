"""Scripted model upstreams for coding agents: call a tool first, then answer with its result.

A coding agent sends many requests per task, some of them side requests (titles, summaries)
without tools. So the fakes decide from each request alone, never from a request count:

- the file's secret (``Task.secret``) appears in the request: the tool ran and its output came
  back, so the answer is the final text, which quotes the secret;
- else the tool the test chose is declared: the answer is a call of that tool;
- else a short plain text.

The secret is in the file the tool reads, never in the call itself, so finding it in a request
proves that the agent really ran the tool and sent its output back. Like a thinking model, a
fake reasons (``THOUGHT``) before it calls the tool, in its upstream kind's own way.
:class:`AgentOpenAI` streams chat-completions chunks: ``reasoning_content``, then a native
tool call. :class:`AgentAichats` writes text: a ``<think>`` section, then the call as an
emulated ``<tool_calls>`` block. :class:`AgentAnthropic` (Messages) and
:class:`AgentResponses` (Responses) answer in their API's own events, thinking with a
signature and reasoning with an encrypted part, and keep every request's and answer's bytes:
a coding agent speaking that API reaches them untranslated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import aichats_body

SIDE_ANSWER = "ok"
# Thinking models reason before they call a tool; the fakes do too, on that turn only.
THOUGHT = "I need the tool's output first."
# A fake that never sees the secret stops calling after this many calls, so a broken round
# trip ends with a wrong answer instead of a loop until the agent's time runs out.
MAX_CALLS = 3
GAVE_UP = "The tool never said it."


@dataclass(frozen=True)
class Task:
    """What the fake model wants: a call of ``tool`` with ``arguments``, then ``final``.

    ``secret`` is a string that only the tool's output contains, never the call.
    """

    tool: str
    arguments: dict[str, Any]
    secret: str

    @property
    def final(self) -> str:
        """The answer once the tool's output arrived."""
        return f"The tool said: {self.secret}."


@dataclass
class AgentUpstream:
    """What both fakes share: the task and every request they received."""

    task: Task | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0

    def start(self, task: Task) -> None:
        """Work on ``task`` from now on, with no requests seen yet."""
        self.task, self.calls = task, 0
        self.requests.clear()

    def reply(self, body: dict[str, Any], declared: bool) -> str | dict[str, Any]:
        """The final text, the tool call (as ``{"name", "arguments"}``) or the side answer."""
        self.requests.append(body)
        task = self.task
        if task is None:
            return SIDE_ANSWER
        if task.secret in json.dumps(body):
            return task.final
        if not declared:
            return SIDE_ANSWER
        if self.calls == MAX_CALLS:
            return GAVE_UP
        self.calls += 1
        return {"name": task.tool, "arguments": task.arguments}

    def saw_secret(self) -> bool:
        """Whether a request carried the tool's output back."""
        return self.task is not None and any(
            self.task.secret in json.dumps(b) for b in self.requests
        )


def words(text: str) -> list[str]:
    """``text`` in word-sized pieces that join back into it exactly."""
    return re.findall(r"\s*\S+", text)


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-agent",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


class AgentOpenAI(AgentUpstream):
    """An OpenAI-compatible upstream: ``POST /v1/chat/completions``, streamed or whole."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        names = {(t.get("function") or {}).get("name") for t in body.get("tools") or ()}
        task = self.task
        answer = self.reply(body, task is not None and task.tool in names)
        model = body["model"]
        if not body.get("stream"):
            return web.json_response(self._whole(model, answer))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunk(model, {"role": "assistant", "content": ""}))
        if isinstance(answer, str):
            for piece in words(answer):
                await response.write(_chunk(model, {"content": piece}))
            await response.write(_chunk(model, {}, "stop"))
        else:
            await response.write(_chunk(model, {"reasoning_content": THOUGHT}))
            arguments = json.dumps(answer["arguments"])
            half = len(arguments) // 2
            call = {"index": 0, "id": "call_agent_1", "type": "function"}
            first = {**call, "function": {"name": answer["name"], "arguments": arguments[:half]}}
            await response.write(_chunk(model, {"tool_calls": [first]}))
            rest = {"index": 0, "function": {"arguments": arguments[half:]}}
            await response.write(_chunk(model, {"tool_calls": [rest]}))
            await response.write(_chunk(model, {}, "tool_calls"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    def _whole(model: str, answer: str | dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        finish = "stop"
        if not isinstance(answer, str):
            function = {"name": answer["name"], "arguments": json.dumps(answer["arguments"])}
            call = {"id": "call_agent_1", "type": "function", "function": function}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        return {
            "id": "chatcmpl-agent",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }

    def app(self) -> web.Application:
        """The fake as an aiohttp application."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.handle)
        return app


class AgentAichats(AgentUpstream):
    """An aichats web chat (``POST /chat/send2/``) whose model writes emulated tool calls."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        # Emulated tools reach a web chat only as text: the gateway's instructions name them.
        text = "\n".join(turn["content"] for turn in body["messagesHistory"])
        task = self.task
        answer = self.reply(body, task is not None and f'"name": "{task.tool}"' in text)
        if isinstance(answer, str):
            pieces = words(answer)
        else:
            block = json.dumps([answer])
            thought = f"<think>{THOUGHT}</think>"
            pieces = [
                thought,
                "Let me look.\n<tool_calls>\n",
                block[:10],
                block[10:],
                "\n</tool_calls>",
            ]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            await response.write(aichats_body([piece]))
        await response.write_eof()
        return response

    def app(self) -> web.Application:
        """The fake as an aiohttp application."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/chat/send2/", self.handle)
        return app


SIGNATURE = "EqQBagent-signature"


def _named(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


@dataclass
class _Native(AgentUpstream):
    """A native API's fake: every request's bytes and every answer's bytes, in order."""

    raw_requests: list[bytes] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)

    async def _answer(self, request: web.Request, events: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(event)
        self.sent.append(b"".join(events))
        await response.write_eof()
        return response


class AgentAnthropic(_Native):
    """Anthropic's Messages API (``POST /v1/messages``), streamed: thinking, then a call."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.raw_requests.append(raw)
        body = json.loads(raw)
        names = {tool.get("name") for tool in body.get("tools") or ()}
        task = self.task
        answer = self.reply(body, task is not None and task.tool in names)
        usage = {"input_tokens": 20, "output_tokens": 1, "cache_read_input_tokens": 100}
        message = {
            "id": "msg_agent",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        events = [_named("message_start", {"type": "message_start", "message": message})]
        blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        if isinstance(answer, str):
            text = [{"type": "text_delta", "text": piece} for piece in words(answer)]
            blocks.append(({"type": "text", "text": ""}, text))
            stop = "end_turn"
        else:
            thought = [
                {"type": "thinking_delta", "thinking": THOUGHT},
                {"type": "signature_delta", "signature": SIGNATURE},
            ]
            blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, thought))
            arguments = json.dumps(answer["arguments"])
            call = {"type": "tool_use", "id": "toolu_agent_1", "name": answer["name"], "input": {}}
            pieces = [arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]]
            json_deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
            blocks.append((call, json_deltas))
            stop = "tool_use"
        for index, (block, deltas) in enumerate(blocks):
            start = {"type": "content_block_start", "index": index, "content_block": block}
            events.append(_named("content_block_start", start))
            for delta in deltas:
                data = {"type": "content_block_delta", "index": index, "delta": delta}
                events.append(_named("content_block_delta", data))
            events.append(
                _named("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        ending = {"stop_reason": stop, "stop_sequence": None}
        end = {"type": "message_delta", "delta": ending, "usage": {"output_tokens": 5}}
        events.append(_named("message_delta", end))
        events.append(_named("message_stop", {"type": "message_stop"}))
        return await self._answer(request, events)

    def app(self) -> web.Application:
        """The fake as an aiohttp application."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/messages", self.handle)
        return app


class AgentResponses(_Native):
    """OpenAI's Responses API (``POST /v1/responses``), streamed: reasoning, then a call."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.raw_requests.append(raw)
        body = json.loads(raw)
        names = {tool.get("name") for tool in body.get("tools") or ()}
        task = self.task
        answer = self.reply(body, task is not None and task.tool in names)
        items: list[dict[str, Any]] = []
        if isinstance(answer, str):
            part = {"type": "output_text", "text": answer, "annotations": [], "logprobs": []}
            items.append(
                {
                    "id": "msg_agent",
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [part],
                }
            )
        else:
            summary = [{"type": "summary_text", "text": THOUGHT}]
            items.append(
                {
                    "id": "rs_agent",
                    "type": "reasoning",
                    "summary": summary,
                    "encrypted_content": "gAAAAagent",
                }
            )
            items.append(
                {
                    "id": "fc_agent",
                    "type": "function_call",
                    "status": "completed",
                    "call_id": "call_agent_1",
                    "name": answer["name"],
                    "arguments": json.dumps(answer["arguments"]),
                }
            )
        response = {
            "id": "resp_agent",
            "object": "response",
            "created_at": 1_700_000_000,
            "status": "in_progress",
            "model": body["model"],
            "output": [],
            "usage": None,
        }
        events = [("response.created", {"response": response})]
        for index, item in enumerate(items):
            place = {"item_id": item["id"], "output_index": index}
            events.append(("response.output_item.added", {"output_index": index, "item": item}))
            if item["type"] == "message":
                for piece in words(answer if isinstance(answer, str) else ""):
                    delta = {**place, "content_index": 0, "delta": piece, "logprobs": []}
                    events.append(("response.output_text.delta", delta))
            elif item["type"] == "reasoning":
                delta = {**place, "summary_index": 0, "delta": THOUGHT}
                events.append(("response.reasoning_summary_text.delta", delta))
            events.append(("response.output_item.done", {"output_index": index, "item": item}))
        usage = {
            "input_tokens": 20,
            "input_tokens_details": {"cached_tokens": 16, "cache_write_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 2},
            "total_tokens": 25,
        }
        done = {**response, "status": "completed", "output": items, "usage": usage}
        events.append(("response.completed", {"response": done}))
        encoded = [
            _named(name, {"type": name, **data, "sequence_number": n})
            for n, (name, data) in enumerate(events)
        ]
        return await self._answer(request, encoded)

    def app(self) -> web.Application:
        """The fake as an aiohttp application."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/responses", self.handle)
        return app
