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
emulated ``<tool_calls>`` block.
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
