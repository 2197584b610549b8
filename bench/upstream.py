"""A fake upstream on 127.0.0.1 speaking every protocol aichat has providers for.

- aichats: ``POST /chat/send2/`` answers ``data: <piece>`` lines.
- OpenAI: ``POST /v1/chat/completions``, streamed (SSE chunks, optional usage chunk, ``[DONE]``)
  or whole, shaped like OpenAI's own answers so pass-through gateways do real work.
- Anthropic Messages (``POST /v1/messages``) and the Responses API (``POST /v1/responses``),
  streamed or whole (``bench.native``), for the coding agents' scenarios (``bench.agents``).
- OTLP/HTTP traces: ``POST /v1/traces`` takes a traced gateway's spans and drops them.

Every answer is built once per shape and cached as bytes: the upstream must cost as little CPU
as possible, since it shares a core with the load generator. Run it as
``python -m bench.upstream --port 0``; it prints ``{"port": N}`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import time
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from bench import native
from bench.answer import Shape, piece
from bench.loops import run_fast

_SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_CREATED = int(time.time())
_ID = "chatcmpl-benchfakeupstream000000"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@lru_cache(maxsize=256)
def aichats_events(chunks: int) -> tuple[bytes, ...]:
    """The aichats body of an answer of ``chunks`` pieces, one ``data:`` event per piece."""
    return tuple(f"data: {piece(i)}\n\n".encode() for i in range(chunks))


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": _ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": model,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _usage(chunks: int) -> dict[str, int]:
    return {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}


@lru_cache(maxsize=256)
def openai_events(chunks: int, model: str, include_usage: bool) -> tuple[bytes, ...]:
    """An OpenAI SSE stream: role chunk, one chunk per piece, finish, usage?, ``[DONE]``."""
    events = [_chunk(model, {"role": "assistant", "content": "", "refusal": None})]
    events += [_chunk(model, {"content": piece(i)}) for i in range(chunks)]
    events.append(_chunk(model, {}, "stop"))
    if include_usage:
        events.append({**_chunk(model, {}), "choices": [], "usage": _usage(chunks)})
    return (*(b"data: " + _dumps(e) + b"\n\n" for e in events), b"data: [DONE]\n\n")


@lru_cache(maxsize=256)
def openai_completion(chunks: int, model: str) -> bytes:
    """A whole ``chat.completion`` with the same text as the stream."""
    text = "".join(piece(i) for i in range(chunks))
    message = {"role": "assistant", "content": text, "refusal": None}
    return _dumps(
        {
            "id": _ID,
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": _usage(chunks),
        }
    )


async def _stream(
    request: web.Request, events: tuple[bytes, ...], shape: Shape, first_answer: int
) -> web.StreamResponse:
    """Write ``events`` one write each; ``hold_s`` after event ``first_answer``, then pace."""
    response = web.StreamResponse(headers=_SSE)
    await response.prepare(request)
    pace = shape.pace_ms / 1000
    for n, event in enumerate(events):
        await response.write(event)
        if n == first_answer and shape.hold_s:
            await asyncio.sleep(shape.hold_s)
        elif pace and n >= first_answer:
            await asyncio.sleep(pace)
    await response.write_eof()
    return response


async def aichats(request: web.Request) -> web.StreamResponse:
    """``POST /chat/send2/``: the directive is found in the raw body, no JSON parsing needed."""
    shape = Shape.parse((await request.read()).decode())
    return await _stream(request, aichats_events(shape.chunks), shape, first_answer=0)


async def openai(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``, streamed or whole as the request asks."""
    body, shape = await _read(request, "messages")
    model = str(body.get("model", "bench"))
    if not body.get("stream"):
        return await _whole(openai_completion(shape.chunks, model), shape)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = openai_events(shape.chunks, model, include_usage)
    return await _stream(request, events, shape, first_answer=1)


async def _read(request: web.Request, turns: str) -> tuple[dict[str, Any], Shape]:
    """The request body (orjson: agents' bodies are 40-50 KB), and the shape its last turn
    (in the list ``turns``) asks for."""
    body = orjson.loads(await request.read())
    last = body.get(turns)
    return body, Shape.parse(json.dumps(last[-1:] if isinstance(last, list) else last))


async def _whole(answer: bytes, shape: Shape) -> web.Response:
    """A whole answer, after the time a paced or held stream would have taken."""
    if shape.pace_ms or shape.hold_s:
        await asyncio.sleep(shape.hold_s + shape.chunks * shape.pace_ms / 1000)
    return web.Response(body=answer, content_type="application/json")


def _native(turns: str, whole: Any, events: Any, first_piece: int) -> Any:
    """The handler of one native API: ``whole(chunks, model)`` bytes as a whole answer, or
    the stream of ``events(chunks, model)``, whose event ``first_piece`` has the first piece;
    the shape asked for in the last item of ``turns``."""

    async def answer(request: web.Request) -> web.StreamResponse:
        body, shape = await _read(request, turns)
        model = str(body.get("model", "bench"))
        if not body.get("stream"):
            return await _whole(whole(shape.chunks, model), shape)
        return await _stream(request, events(shape.chunks, model), shape, first_piece)

    return answer


async def health(_: web.Request) -> web.Response:
    """Liveness for the driver's start-up wait."""
    return web.json_response({"status": "ok"})


async def models(_: web.Request) -> web.Response:
    """A models list, for peers that look one up at start."""
    return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model"}]})


async def traces(request: web.Request) -> web.Response:
    """An OTLP/HTTP trace receiver that keeps nothing, for ``aichat-traced``."""
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")


def create_app() -> web.Application:
    """The fake upstream's routes."""
    app = web.Application()
    app.router.add_post("/chat/send2/", aichats)
    app.router.add_post("/v1/chat/completions", openai)
    app.router.add_post("/chat/completions", openai)
    messages = _native(
        "messages", native.messages_whole, native.messages_events, native.MESSAGES_FIRST_PIECE
    )
    app.router.add_post("/v1/messages", messages)
    responses = _native(
        "input", native.responses_whole, native.responses_events, native.RESPONSES_FIRST_PIECE
    )
    app.router.add_post("/v1/responses", responses)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/traces", traces)
    return app


def listen_socket(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 with a backlog deep enough for 1,000 streams at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def serve(port: int) -> None:
    """Listen on 127.0.0.1 until SIGTERM/SIGINT; print the bound port first."""
    # Cancelling handlers on disconnect ends held streams as soon as the client leaves.
    runner = web.AppRunner(create_app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    sock = listen_socket(port)
    await web.SockSite(runner, sock).start()
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    """``python -m bench.upstream --port N`` (0 picks a free port)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    run_fast(serve(args.port))


if __name__ == "__main__":
    main()
