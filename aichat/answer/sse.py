"""Writing a server-sent-events answer: flushed as produced, ended honestly."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import orjson
from aiohttp import web

from aichat.core.errors import APIError
from aichat.core.exchange import Exchange
from aichat.operations.lifecycle import ShuttingDown, is_drain
from aichat.operations.metrics import METRICS

log = logging.getLogger("aichat.sse")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    # Tells nginx-style proxies not to buffer: each event must reach the client at once.
    "X-Accel-Buffering": "no",
}


class Final(bytes):
    """A stream's last bytes: written with the end of the body, in one write."""


class _SSEResponse(web.StreamResponse):
    # aiohttp's opt-in to hold the headers until the first body write, as a whole Response
    # does. ``write_sse`` prepares the response with its first event in hand, so both go
    # out in one send: one system call and one packet per stream fewer, on both ends.
    _send_headers_immediately = False


def named_event(name: str, data: dict[str, Any]) -> bytes:
    """One event with an ``event:`` line, as the Responses and Anthropic Messages APIs send.

    Compact UTF-8 JSON by orjson: a Responses stream repeats the request's tools in three of
    its events, 20 KB for a coding agent, which json takes several times as long to write.
    What orjson refuses (an integer past 64 bits, from a client's tool schema) goes
    through json.
    """
    try:
        payload = orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError is one
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


async def write_sse(
    request: web.Request,
    exchange: Exchange,
    events: AsyncGenerator[bytes, None],
    error_event: Callable[[APIError], bytes],
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Stream ``events`` to the client; a failure mid-way ends with ``error_event``.

    ``write`` waits while the client's socket buffer is full, so a slow reader slows the
    upstream reads instead of growing memory. ``events`` is closed here, in this task, also
    when the loop leaves it early: a generator left suspended would be closed by the garbage
    collector through a task of its own and a thread-safe wake-up of the loop.
    """
    response = _SSEResponse(headers={**SSE_HEADERS, **(headers or {})})
    await response.prepare(request)
    metrics = request.app[METRICS]
    metrics.open_streams += 1
    try:
        tail = b""
        try:
            async with aclosing(events):
                async for event in events:
                    if type(event) is Final:
                        # The last event goes out with the end of the body: one write fewer.
                        tail = event
                        break
                    await response.write(event)
        except APIError as err:
            log.warning("stream failed after start: %s", err.message)
            exchange.note(error=err.code)
            tail = error_event(err)
        except asyncio.CancelledError as exc:
            if not is_drain(exc):
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            tail = error_event(ShuttingDown())
        except ConnectionResetError:
            raise
        except Exception:
            log.exception("stream failed after start")
            tail = error_event(APIError("Internal server error.", code="internal_error"))
        await response.write_eof(tail)
    except ConnectionResetError:
        # The client is gone: the request ends as when aiohttp cancels it for a client that
        # left (a 499 in the access line, never a stream sent whole), though the write saw it
        # first; the caller's cleanup cancels the upstream request.
        raise asyncio.CancelledError from None
    finally:
        metrics.open_streams -= 1
    return response
