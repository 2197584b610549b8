"""Upstream HTTP calls shared by providers: timeouts and failures mapped to ``UpstreamError``.

Three timeouts apply to every upstream call: connecting (set on the shared session), the
first byte (response headers and the first body bytes) and the idle gap between reads.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import aiohttp

from aichat.errors import UpstreamError, UpstreamTimeout

JSON_HEADERS = {"Content-Type": "application/json"}


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


async def upstream_body(
    session: aiohttp.ClientSession,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeouts: Timeouts,
    name: str,
) -> AsyncGenerator[bytes, None]:
    """POST ``body`` to an upstream and yield its 2xx answer's bytes as they arrive.

    Anything else raises ``UpstreamError``. One timer covers the whole exchange: armed for
    the first byte, re-armed for each later read, disarmed while the caller holds a chunk
    (a slow client is not an idle upstream). Close the generator (``aclosing``) to release
    the connection; an unread body closes it, so an abandoned stream stops the upstream.
    """
    loop = asyncio.get_running_loop()
    answered = False  # response headers arrived: a timeout now means the upstream stalled
    try:
        async with asyncio.timeout(timeouts.first_byte) as timer:
            resp = await session.post(url, data=body, headers=headers)
            answered = True
            try:
                if resp.status >= 400:
                    raise await _status_error(resp, name)
                limit = timeouts.first_byte
                content = resp.content
                while True:
                    timer.reschedule(loop.time() + limit)
                    chunk = await content.readany()
                    timer.reschedule(None)
                    if not chunk:
                        return
                    yield chunk
                    limit = timeouts.idle
            finally:
                resp.release()
    except TimeoutError:
        if answered:
            raise UpstreamTimeout(f"{name} upstream stopped sending.") from None
        raise UpstreamTimeout(f"{name} upstream did not answer in time.") from None
    except (aiohttp.ClientError, OSError) as exc:
        what = "connection broke" if answered else "unreachable"
        raise UpstreamError(f"{name} upstream {what}: {type(exc).__name__}.") from None


async def _status_error(resp: aiohttp.ClientResponse, name: str) -> UpstreamError:
    body = await _error_body(resp)
    detail = " ".join(body.split())[:300]
    return UpstreamError(
        f"{name} upstream answered HTTP {resp.status}" + (f": {detail}" if detail else "."),
        retryable=resp.status in (408, 429) or resp.status >= 500,
        retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
        upstream_status=resp.status,
        upstream_body=body,
    )
