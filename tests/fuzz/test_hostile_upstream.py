"""Hostile upstreams on 127.0.0.1: endless lines, huge and compressed answers, trickles,
redirects. Each gets a bounded, honest error, and the gateway stays responsive and small.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from aichat.core.config import ModelConfig
from tests.conftest import API_KEY, Gateway, GatewayFactory, _start
from tests.fakes import json_events, sse_events

MIB = 1024 * 1024
AUTH = {"Authorization": f"Bearer {API_KEY}"}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "elsewhere", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
}


def rss() -> int:
    """This process's resident memory in bytes (the gateway runs in it)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclass
class Hostile:
    """One upstream app with a path per kind of hostility."""

    bomb: bytes  # 256 MiB of ``x`` without a newline, gzip-compressed to about 1 MiB
    redirected_to: int = 0

    async def _send(self, request: web.Request, body: bytes, **headers: str) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        for start in range(0, len(body), 64 * 1024):
            await response.write(body[start : start + 64 * 1024])
        await response.write_eof()
        return response

    async def gzip_line(self, request: web.Request) -> web.StreamResponse:
        return await self._send(
            request, self.bomb, **{"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
        )

    async def gzip_answer(self, request: web.Request) -> web.StreamResponse:
        return await self._send(
            request, self.bomb, **{"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    async def huge_answer(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"choices": "')
        for _ in range(1024):  # a GiB, if anyone reads it all
            await response.write(b"x" * MIB)
        return response

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"data: a\n\n")
            await asyncio.sleep(0.1)
        return response

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        location = str(request.url.with_path("/elsewhere/v1/chat/completions"))
        raise web.HTTPTemporaryRedirect(location)

    async def elsewhere(self, request: web.Request) -> web.StreamResponse:
        self.redirected_to += 1
        return web.json_response(COMPLETION)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/line/chat/send2/", self.gzip_line)
        app.router.add_post("/gzip/v1/chat/completions", self.gzip_answer)
        app.router.add_post("/huge/v1/chat/completions", self.huge_answer)
        app.router.add_post("/trickle/chat/send2/", self.trickle)
        app.router.add_post("/redirect/v1/chat/completions", self.redirect)
        app.router.add_post("/elsewhere/v1/chat/completions", self.elsewhere)
        return app


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """The compressed quarter gigabyte, made once."""
    return gzip.compress(b"x" * (256 * MIB), 1)


@pytest.fixture
async def hostile(bomb: bytes) -> AsyncIterator[tuple[Hostile, str]]:
    """The hostile upstream and its base URL."""
    fake = Hostile(bomb=bomb)
    app_runner, url = await _start(fake.app())
    yield fake, url
    await app_runner.cleanup()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, hostile: tuple[Hostile, str]) -> Gateway:
    """A gateway with one model per hostile path, no retries, 1 MiB whole answers."""
    _, url = hostile
    routes = (
        ModelConfig(name="line", provider="aichats", base_url=f"{url}/line"),
        ModelConfig(name="gzip", provider="openai", base_url=f"{url}/gzip/v1"),
        ModelConfig(name="huge", provider="openai", base_url=f"{url}/huge/v1"),
        ModelConfig(
            name="trickle", provider="aichats", base_url=f"{url}/trickle", total_timeout=0.5
        ),
        ModelConfig(name="redirect", provider="openai", base_url=f"{url}/redirect/v1"),
        ModelConfig(
            name="follow", provider="openai", base_url=f"{url}/redirect/v1", follow_redirects=True
        ),
    )
    return await make_gateway(routes=routes, retries=0, max_answer_bytes=MIB)


async def post(gateway: Gateway, model: str, stream: bool) -> tuple[int, bytes]:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    async with gateway.http.post(
        f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH
    ) as response:
        return response.status, await response.read()


async def while_watching(gateway: Gateway, work: asyncio.Task[tuple[int, bytes]]) -> float:
    """Poll ``/health`` until ``work`` ends; the slowest answer in seconds."""
    loop = asyncio.get_running_loop()
    slowest = 0.0
    while not work.done():
        started = loop.time()
        async with gateway.http.get(f"{gateway.url}/health") as response:
            assert response.status == 200
        slowest = max(slowest, loop.time() - started)
        await asyncio.sleep(0.02)
    return slowest


@pytest.mark.parametrize(("model", "stream"), [("line", True), ("gzip", False), ("huge", False)])
async def test_endless_lines_and_huge_answers_fail_fast_with_the_loop_free_and_memory_flat(
    gateway: Gateway, model: str, stream: bool
) -> None:
    before = rss()
    work = asyncio.create_task(post(gateway, model, stream))
    slowest = await asyncio.wait_for(while_watching(gateway, work), 10)
    status, body = work.result()
    assert status == 502, body[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "upstream_error"
    assert (
        "AICHAT_MAX_LINE_BYTES" in error["message"] or "AICHAT_MAX_ANSWER_BYTES" in error["message"]
    )
    assert slowest < 0.5, f"/health took {slowest:.2f} s"
    assert rss() - before < 64 * MIB


async def test_a_trickling_upstream_hits_the_models_total_deadline(gateway: Gateway) -> None:
    status, body = await post(gateway, "trickle", stream=True)
    assert status == 200
    events = sse_events(body)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_timeout"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in json_events(body)[:-1])
    status, body = await post(gateway, "trickle", stream=False)
    assert status == 504, body
    assert "AICHAT_TOTAL_TIMEOUT" in json.loads(body)["error"]["message"]


async def test_redirects_are_errors_unless_the_model_allows_them(
    gateway: Gateway, hostile: tuple[Hostile, str]
) -> None:
    fake, url = hostile
    for stream in (False, True):
        status, body = await post(gateway, "redirect", stream)
        assert status == 502, body
        message = json.loads(body)["error"]["message"]
        assert "307" in message
        assert f"{url}/elsewhere/v1/chat/completions" in message
    assert fake.redirected_to == 0  # the prompt went nowhere else
    status, body = await post(gateway, "follow", stream=False)
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == "elsewhere"
    assert fake.redirected_to == 1


async def test_the_total_deadline_applies_to_every_model_without_its_own(
    make_gateway: GatewayFactory, hostile: tuple[Hostile, str]
) -> None:
    _, url = hostile
    routes = (ModelConfig(name="trickle", provider="aichats", base_url=f"{url}/trickle"),)
    gateway = await make_gateway(routes=routes, retries=0, total_timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, body = await post(gateway, "trickle", stream=False)
    assert status == 504, body
    assert "within 0.3 s" in json.loads(body)["error"]["message"]
    assert loop.time() - started < 2  # the trickle itself would last ten seconds
