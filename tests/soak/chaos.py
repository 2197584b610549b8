"""An upstream that misbehaves on purpose (drops, stalls, 5xx, half-written lines), and
what a client must find in the gateway's answers.

It speaks both upstream protocols the gateway relays: aichats (``POST /chat/send2/``) and
OpenAI-compatible (``POST /v1/chat/completions``). Every request asks for answer number
``n`` (its last message is ``soak <n>``); the answer's text and what goes wrong with it
follow from a seeded generator of ``n`` and the attempt number, so a run is the same
whatever order the requests arrive in, and a retry may fare differently. ``fates``
forces what happens to chosen answers.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fakes import aichats_body

# Words with multi-byte characters, escapes and quotes: cut anywhere, they show garbling.
WORDS = ["Hello", " wörld", " 日本語", " 😀", "\nnext line", ' "quoted"', "\ttab", " ok", ","]
KINDS = {
    # what goes wrong: share of attempts
    "ok": 0.55,
    "status_5xx": 0.10,  # an error status before any body
    "reset_early": 0.05,  # the connection is cut before the answer starts
    "stall_early": 0.05,  # silence before the first byte
    "reset_mid": 0.10,  # the connection is cut after part of the answer
    "half_line": 0.05,  # part of the answer, then half of a line, then a cut
    "stall_mid": 0.10,  # part of the answer, then silence
}


def answer_pieces(n: int) -> list[str]:
    """The pieces of answer number ``n`` (the client knows them too)."""
    rng = random.Random(n)
    return [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]


def prompt(n: int) -> str:
    """The message that asks for answer number ``n``."""
    return f"soak {n}"


def _openai_stream(pieces: list[str], model: str) -> bytes:
    head = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": model}
    deltas = [{"role": "assistant", "content": ""}, *({"content": p} for p in pieces), {}]
    events = [
        {
            **head,
            "choices": [{"index": 0, "delta": d, "finish_reason": None if d != {} else "stop"}],
        }
        for d in deltas
    ]
    lines = [f"data: {json.dumps(event, ensure_ascii=False)}\n\n" for event in events]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


def _openai_completion(pieces: list[str], model: str) -> bytes:
    message = {"role": "assistant", "content": "".join(pieces)}
    completion = {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": len(pieces), "total_tokens": 9},
    }
    return json.dumps(completion, ensure_ascii=False).encode()


@dataclass
class Plan:
    """What one attempt at one answer does."""

    kind: str
    status: int  # for status_5xx
    writes: list[bytes]  # the body, cut into writes at random byte offsets
    keep: int  # for the failures mid-answer: how many writes go out before it fails
    delays: list[float]  # seconds before each write


def plan(seed: int, n: int, attempt: int, body: bytes) -> Plan:
    """The fate of attempt ``attempt`` at answer ``n``."""
    rng = random.Random(f"{seed}:{n}:{attempt}")
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    cuts = sorted(rng.sample(range(1, len(body)), k=rng.randint(1, 8)))
    writes = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    return Plan(
        kind,
        status=rng.choice((500, 502, 503)),
        writes=writes,
        keep=rng.randint(1, len(writes) - 1),
        delays=[rng.choice((0.0, 0.0, 0.002, 0.01)) for _ in writes],
    )


@dataclass
class ChaosUpstream:
    """The misbehaving upstream; ``kinds`` counts what it did."""

    seed: int = 5
    fates: dict[int, str] = field(default_factory=dict)  # answer number -> kind, always
    attempts: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)

    def app(self) -> web.Application:
        """Both protocols' routes."""
        app = web.Application()
        app.router.add_post("/chat/send2/", self._aichats)
        app.router.add_post("/v1/chat/completions", self._openai)
        return app

    async def _aichats(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body["messagesHistory"][-1]["content"].split()[-1])
        return await self._answer(request, n, aichats_body(answer_pieces(n)))

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body["messages"][-1]["content"].split()[-1])
        make = _openai_stream if body.get("stream") else _openai_completion
        return await self._answer(request, n, make(answer_pieces(n), body["model"]))

    async def _answer(self, request: web.Request, n: int, body: bytes) -> web.StreamResponse:
        self.attempts[n] += 1
        fate = plan(self.seed, n, self.attempts[n], body)
        fate.kind = self.fates.get(n, fate.kind)
        self.kinds[fate.kind] += 1
        if fate.kind == "status_5xx":
            refusal = web.Response(status=fate.status, text="chaos says no")
            refusal.force_close()  # like every answer here: the connection ends with it
            return refusal
        if fate.kind == "stall_early":
            await asyncio.sleep(3600)  # until the gateway gives up and hangs up
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.force_close()  # no keep-alive: every connection ends with its answer
        await response.prepare(request)
        if fate.kind == "reset_early":
            return _cut(request, response)
        for i, (chunk, delay) in enumerate(zip(fate.writes, fate.delays, strict=True)):
            if i == fate.keep:
                if fate.kind == "stall_mid":
                    await asyncio.sleep(3600)
                if fate.kind == "half_line":
                    await response.write(b"data: half a li")
                if fate.kind in ("reset_mid", "half_line"):
                    return _cut(request, response)
            if delay:
                await asyncio.sleep(delay)
            await response.write(chunk)
        await response.write_eof()
        return response


def _cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Reset the connection under ``response``: its (chunked) body never ends properly."""
    assert request.transport is not None
    request.transport.abort()
    return response


@asynccontextmanager
async def serving(upstream: ChaosUpstream) -> AsyncIterator[str]:
    """``upstream`` on a free loopback port; yields its base URL."""
    server = TestServer(upstream.app(), host="127.0.0.1")
    await server.start_server()  # cancels a handler when its client hangs up
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


class Broken(Exception):
    """An answer that breaks the gateway's contract."""


def error_code(body: Any) -> str | None:
    """The code of an OpenAI error object, or None if ``body`` is not one."""
    if not isinstance(body, dict) or set(body) != {"error"}:
        return None
    error = body["error"]
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return None
    return str(error["code"])


def read_stream(raw: bytes) -> tuple[str, str]:
    """The text a streamed answer carries and its last event; ``Broken`` if badly framed."""
    if not raw.endswith(b"\n\n"):
        raise Broken(f"stream cut without an ending: {raw[-80:]!r}")
    payloads = []
    for block in raw.decode().split("\n\n")[:-1]:
        if not block.startswith("data: "):
            raise Broken(f"not an SSE data event: {block[:80]!r}")
        payloads.append(block[len("data: ") :])
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return text, payloads[-1]
