"""Upstream HTTP calls shared by providers: bounds and failures mapped to ``UpstreamError``.

Four timeouts apply to every upstream call: connecting (set on the shared session), the
first byte (response headers and the first body bytes), the idle gap between reads and a
total deadline for the whole attempt, so an upstream trickling a byte at a time cannot hold
a request for ever. A whole (non-streamed) answer is capped in size, since it is held in
memory; a stream is not, it is passed on as it arrives. Redirects are errors unless the
model's config allows them: following one re-sends the prompt and the upstream key to
wherever the upstream points. A request the upstream hangs up on before answering is sent
once more at once, within the same deadline: a pooled connection the upstream was closing
(llama.cpp closes one after a stream that it said it keeps alive) is not a failure to
retry after a backoff, nor to count.

Every error names the upstream's host and port and what went wrong (DNS, connect, TLS,
timeout, redirect or HTTP status) in words a person can act on; ``UpstreamError.cause``
carries the same without the upstream's body, for logs and circuit reports.

A trace reaches every upstream request through ``aichat.core.trace.OUTBOUND``, a context
variable: while an attempt is traced, its headers (W3C ``traceparent``) are added to the
request and the URL it went to is noted for the attempt's span. Untraced, that is one
``ContextVar.get`` per upstream request.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Mapping
from dataclasses import dataclass

import aiohttp
from yarl import URL

from aichat.core.errors import UpstreamError, UpstreamTimeout
from aichat.core.trace import OUTBOUND

JSON_HEADERS = {"Content-Type": "application/json"}


def request_headers(
    auth: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[bool, dict[str, str]]:
    """The headers of a JSON request to an upstream, by whether it asks for a stream:
    ``auth``, the content and accepted types, then the route's ``extra`` headers."""
    return {
        stream: {**auth, **JSON_HEADERS, "Accept": accept, **(extra or {})}
        for stream, accept in ((True, "text/event-stream"), (False, "application/json"))
    }


MIB = 1024 * 1024
# Reads handed on between two turns given to the event loop: reads that are already
# buffered return without waiting, and other requests, timers and signals need turns too.
_YIELD_EVERY = 256 * 1024


@dataclass(frozen=True, slots=True)
class UpstreamBounds:
    """What one upstream attempt may cost: in seconds, in bytes, and where it may go.

    ``first_byte``: to the first answer byte; ``idle``: between two later reads; ``total``:
    the whole attempt (0: no deadline). ``max_line``: the longest line of a stream;
    ``max_answer``: the largest whole (non-streamed) answer.
    """

    first_byte: float
    idle: float
    total: float = 0.0
    max_line: int = MIB
    max_answer: int = 8 * MIB
    follow_redirects: bool = False


# A longer wait is no hint a client can act on (and an infinite one breaks arithmetic).
MAX_RETRY_AFTER = 86400.0


def retry_after_seconds(value: str | None) -> float | None:
    """Parse ``Retry-After`` (seconds or an HTTP date) into seconds from now; None when it
    is absent, unreadable, negative or longer than ``MAX_RETRY_AFTER``."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = max(0.0, when.timestamp() - time.time())  # a date gone by: now
    return seconds if 0 <= seconds <= MAX_RETRY_AFTER else None


async def _error_body(resp: aiohttp.ClientResponse) -> str:
    try:
        return (await resp.content.read(4096)).decode("utf-8", "replace")
    except (TimeoutError, aiohttp.ClientError, OSError):
        return ""


class Deadline:
    """When the upstream must have answered the pending await, moved at the cost of a store.

    An ``asyncio.timeout`` re-armed for every read cancels one event-loop timer and creates
    another each time: with uvloop, about half the cost of handling the read. Here ``due``
    moves later freely and the loop's timer is only looked at when it fires: it is re-armed
    for the current ``due`` if that has moved, left unarmed while nothing is awaited
    (``due`` is None: the caller holds a chunk, and a slow client is not an idle upstream),
    and cancels the awaiting task once ``due`` has passed. Only a ``due`` earlier than the
    armed timer (the first idle wait after a longer first-byte one) re-arms it at once.
    ``total`` (0: none) caps every ``due``: the exchange as a whole ends by then.
    """

    __slots__ = ("_end", "_handle", "_loop", "_task", "due", "expired", "overall")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, total: float = 0) -> None:
        self._loop = loop
        self._task = asyncio.current_task()
        self._end = loop.time() + total if total else math.inf
        self.expired = False
        self.overall = False  # what expired was the total deadline
        self.due: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.wait(seconds)

    def wait(self, seconds: float) -> None:
        """The next await must end within ``seconds`` (and before the total deadline)."""
        due = self.due = min(self._loop.time() + seconds, self._end)
        handle = self._handle
        if handle is None or handle.when() > due:  # unarmed, or armed too late
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(due, self._check)

    def _check(self) -> None:
        self._handle = None
        if self.due is None:
            return
        if self.due > self._loop.time():
            self._handle = self._loop.call_at(self.due, self._check)
            return
        self.expired = True
        self.overall = self.due >= self._end
        if self._task is not None:
            self._task.cancel()

    def end_within(self, seconds: float) -> None:
        """Bring the total deadline forward to ``seconds`` from now (never later)."""
        self._end = min(self._end, self._loop.time() + seconds)

    def timed_out(self) -> bool:
        """After a ``CancelledError``: whether this deadline, and nothing else, caused it."""
        return self.expired and self._task is not None and self._task.uncancel() == 0

    def close(self) -> None:
        """Stop watching."""
        self.due = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def upstream_body(
    session: aiohttp.ClientSession,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    bounds: UpstreamBounds,
    name: str,
    whole: bool = False,
) -> AsyncGenerator[bytes, float | None]:
    """POST ``body`` to an upstream and yield its 2xx answer's bytes as they arrive.

    Anything else raises ``UpstreamError``, as does a ``whole`` answer (one the caller
    keeps until it ends) larger than ``bounds.max_answer``. One ``Deadline`` covers the
    whole exchange: the first byte, then each later read; it does not run while the caller
    holds a chunk, except for the total deadline. A caller that needs no more of the answer
    but its end sends (``asend``) the seconds it grants the rest, which bring the total
    deadline forward: one timer for the whole exchange, never a new one. Close the generator
    (``aclosing``) to release the connection; an unread body closes it, so an abandoned
    stream stops the upstream.
    """
    answered = False  # response headers arrived: a timeout now means the upstream stalled
    outbound = OUTBOUND.get()
    if outbound is not None:
        headers = {**headers, **outbound.headers}
        outbound.url = url
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop, bounds.first_byte, bounds.total)

    def post() -> Awaitable[aiohttp.ClientResponse]:
        return session.post(
            url, data=body, headers=headers, allow_redirects=bounds.follow_redirects
        )

    try:
        try:
            resp = await post()
        except aiohttp.ClientConnectorError:
            raise  # no connection was made: nothing to send again
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
            # Closed or reset before any answer: most likely a kept-alive connection the
            # upstream closed as it was reused (llama.cpp closes one after a stream, though
            # its headers say Keep-Alive). Nothing was answered, so the request goes once
            # more, at once, on another connection, as aiohttp does for idempotent methods.
            resp = await post()
        answered = True
        try:
            if resp.status >= 300:
                raise await _status_error(resp, name, _host_port(url))
            cap = bounds.max_answer if whole else math.inf
            if (resp.content_length or 0) > cap:
                raise _too_large(name, bounds.max_answer)
            limit = bounds.first_byte
            content = resp.content
            received = unyielded = 0
            while True:
                deadline.wait(limit)
                chunk = await content.readany()
                deadline.due = None
                if not chunk:
                    return
                received += len(chunk)
                if received > cap:
                    raise _too_large(name, bounds.max_answer)
                granted = yield chunk
                if granted is not None:
                    deadline.end_within(granted)
                limit = bounds.idle
                unyielded += len(chunk)
                if unyielded >= _YIELD_EVERY:
                    unyielded = 0
                    await asyncio.sleep(0)
        finally:
            resp.release()
    except asyncio.CancelledError:
        if not deadline.timed_out():
            raise
        where = _host_port(url)
        if deadline.overall:
            cause = f"{where} did not finish within {bounds.total:g} s (AICHAT_TOTAL_TIMEOUT)"
        else:
            limit = bounds.idle if answered else bounds.first_byte
            cause = f"{where} sent nothing for {limit:g} s"
        raise _timeout(name, cause, answered) from None
    except TimeoutError:  # aiohttp's own: connecting
        where = _host_port(url)
        cause = f"{where} stopped sending" if answered else f"no connection to {where} in time"
        raise _timeout(name, cause, answered) from None
    except (aiohttp.ClientError, OSError) as exc:
        cause = _connection_cause(exc, _host_port(url), answered)
        what = "connection broke" if answered else "unreachable"
        raise UpstreamError(f"{name} upstream {what}: {cause}.", cause=cause) from None
    finally:
        deadline.close()


def _host_port(url: str) -> str:
    """``host:port`` of ``url``: what errors name, never its path, query or credentials."""
    parsed = URL(url)
    return f"{parsed.host}:{parsed.port}"


def _connection_cause(exc: BaseException, where: str, answered: bool) -> str:
    # Most specific first: the DNS and certificate errors are ClientConnectorErrors too.
    if answered:
        return f"connection to {where} broke ({type(exc).__name__})"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup of {where} failed"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {where} not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake with {where} failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        # asyncio's strerror repeats the address; the errno's own text is the cause.
        code = exc.os_error.errno
        reason = os.strerror(code) if code else type(exc.os_error).__name__
        return f"cannot connect to {where} ({reason})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{where} closed the connection without answering"
    return f"request to {where} failed ({type(exc).__name__})"


def _too_large(name: str, cap: int) -> UpstreamError:
    return UpstreamError(
        f"{name} upstream answer is larger than {cap} bytes (AICHAT_MAX_ANSWER_BYTES).",
        retryable=False,
    )


def _timeout(name: str, cause: str, answered: bool) -> UpstreamTimeout:
    what = "stopped sending" if answered else "did not answer in time"
    return UpstreamTimeout(f"{name} upstream {what}: {cause}.", cause=cause)


async def _status_error(resp: aiohttp.ClientResponse, name: str, where: str) -> UpstreamError:
    if resp.status < 400:
        # Only a redirect gets here: the session follows none unless the model allows it.
        location = " ".join(resp.headers.get("Location", "").split())[:300]
        return UpstreamError(
            f"{name} upstream {where} answered HTTP {resp.status} redirecting to "
            f"{location or '?'}; redirects are not followed unless the model's config sets "
            "follow_redirects.",
            cause=f"HTTP {resp.status} redirect from {where}",
            retryable=False,
        )
    body = await _error_body(resp)
    detail = " ".join(body.split())[:300]
    return UpstreamError(
        f"{name} upstream {where} answered HTTP {resp.status}" + (f": {detail}" if detail else "."),
        cause=f"HTTP {resp.status} from {where}",
        retryable=resp.status in (408, 429) or resp.status >= 500,
        retry_after=retry_after_seconds(resp.headers.get("Retry-After")),
        upstream_status=resp.status,
        upstream_body=body,
    )
