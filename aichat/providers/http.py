"""Upstream HTTP calls shared by providers: timeouts and failures mapped to ``UpstreamError``.

Three timeouts apply to every upstream call: connecting (set on the shared session), the
first byte (response headers and the first body bytes) and the idle gap between reads.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from aichat.errors import UpstreamError, UpstreamTimeout

_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait for the first byte of an answer and between two later reads."""

    first_byte: float
    idle: float


def retry_after_seconds(value: str | None) -> float | None:
    """Parse ``Retry-After`` (seconds or an HTTP date) into seconds from now."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def _error_body(resp: aiohttp.ClientResponse) -> str:
    try:
        return (await resp.content.read(4096)).decode("utf-8", "replace")
    except (TimeoutError, aiohttp.ClientError, OSError):
        return ""


@asynccontextmanager
async def post(
    session: aiohttp.ClientSession,
    url: str,
    *,
    json: Any,
    headers: dict[str, str],
    timeouts: Timeouts,
    name: str,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST to an upstream; yield the 2xx response, raise ``UpstreamError`` for anything else.

    Leaving the block releases the connection; an unread body closes it, so a cancelled
    client request never leaves an upstream download running.
    """
    try:
        async with asyncio.timeout(timeouts.first_byte):
            resp = await session.post(url, data=orjson.dumps(json), headers={**headers, **_JSON})
    except TimeoutError:
        raise UpstreamTimeout(f"{name} upstream did not answer in time.") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(f"{name} upstream unreachable: {type(exc).__name__}.") from None
    try:
        if resp.status >= 400:
            body = await _error_body(resp)
            detail = " ".join(body.split())[:300]
            raise UpstreamError(
                f"{name} upstream answered HTTP {resp.status}" + (f": {detail}" if detail else "."),
                retryable=resp.status in (408, 429) or resp.status >= 500,
                retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
                upstream_status=resp.status,
                upstream_body=body,
            )
        yield resp
    finally:
        resp.release()


async def read_chunks(
    resp: aiohttp.ClientResponse, timeouts: Timeouts, name: str
) -> AsyncIterator[bytes]:
    """Yield body bytes as they arrive, enforcing the first-byte and idle timeouts."""
    loop = asyncio.get_running_loop()
    limit = timeouts.first_byte
    content = resp.content
    try:
        # One timer for the whole body, armed for each read and disarmed while the caller
        # holds a chunk (a slow client is not an idle upstream). A fresh timeout context
        # per read cost twice as much, on every chunk of every stream.
        async with asyncio.timeout(None) as timer:
            while True:
                timer.reschedule(loop.time() + limit)
                chunk = await content.readany()
                timer.reschedule(None)
                if not chunk:
                    return
                yield chunk
                limit = timeouts.idle
    except TimeoutError:
        raise UpstreamTimeout(f"{name} upstream stopped sending.") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(f"{name} upstream connection broke: {type(exc).__name__}.") from None
