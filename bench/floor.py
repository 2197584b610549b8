"""The floor: the thinnest gateway aichat's fixed design allows, for scale in the table.

An aiohttp server and one shared ``ClientSession`` on uvloop, as in aichat, and nothing
else: no validation, authentication, limits, routing, retries, metrics or logs, and no
translation. It forwards the fake upstream's stream bytes as they arrive (aichats'
``data:`` lines untranslated, then ``[DONE]``; OpenAI chunks with the upstream's model
name), which the load generator accepts because it only looks for markers and the end.
Anthropic Messages (``/v1/messages``) and Responses (``/v1/responses``) requests go to the
same path upstream, the model renamed, and their answers come back as they are: for the
coding agents' scenarios (``bench.agents``), translated by aichat or not, the floor is
this pass-through. A whole answer (``"stream": false``) goes back in one response: the
upstream's OpenAI completion as it is, or, since aichats only streams, its stream's bytes
read to the end and sent as one JSON string (``{"content": ...}``).

It is not a usable gateway. Its rows show what aiohttp itself costs on this machine, so
the distance between ``floor`` and ``aichat`` is aichat's own work. Run it as
``python -m bench.floor --port N --upstream URL``; it serves ``GET /ready`` once started.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

from bench.gateways import AICHATS_MODEL, UPSTREAM_KEY, UPSTREAM_MODEL
from bench.loops import run_proxy

_SSE = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_DONE = b"data: [DONE]\n\n"
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def _upstream_call(
    base: str, path: str, body: dict[str, object]
) -> tuple[str, dict[str, object], bytes]:
    """Where to send ``body``, what to send, and what to add after the upstream's bytes."""
    if body["model"] == AICHATS_MODEL:
        messages = body["messages"]
        assert isinstance(messages, list)
        history = [{"from": "you", "content": messages[-1]["content"]}]
        return f"{base}/chat/send2/", {"type": "chat", "messagesHistory": history}, _DONE
    return f"{base}{path}", {**body, "model": UPSTREAM_MODEL}, b""


async def forward(request: web.Request) -> web.StreamResponse:
    """Forward one request: a stream's bytes as they come, a whole answer at once."""
    body = orjson.loads(await request.read())
    url, payload, tail = _upstream_call(request.app[UPSTREAM], request.path, body)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {UPSTREAM_KEY}"}
    async with request.app[SESSION].post(url, data=orjson.dumps(payload), headers=headers) as up:
        if not body.get("stream"):
            answer = await up.read()
            if tail:  # aichats: its stream, whole
                answer = orjson.dumps({"content": answer.decode()})
            return web.Response(body=answer, content_type="application/json")
        response = web.StreamResponse(headers=_SSE)
        await response.prepare(request)
        async for chunk in up.content.iter_any():
            await response.write(chunk)
        await response.write_eof(tail)
    return response


async def ready(_: web.Request) -> web.Response:
    """For the driver's start-up wait."""
    return web.json_response({"status": "ready"})


async def _session(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        app[SESSION] = session
        yield


def create_app(upstream: str) -> web.Application:
    """The floor application, forwarding to ``upstream``."""
    app = web.Application()
    app[UPSTREAM] = upstream
    app.cleanup_ctx.append(_session)
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/responses"):
        app.router.add_post(path, forward)
    app.router.add_get("/ready", ready)
    return app


async def serve(port: int, upstream: str) -> None:
    """Listen on 127.0.0.1 until stopped, with aichat's server options."""
    runner = web.AppRunner(create_app(upstream), access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gc.freeze()  # as aichat does once started
    try:
        await asyncio.Event().wait()  # until the driver stops the process
    finally:
        await runner.cleanup()


def main() -> None:
    """``python -m bench.floor --port N --upstream URL``."""
    run_proxy(serve, __doc__ or "")


if __name__ == "__main__":
    main()
