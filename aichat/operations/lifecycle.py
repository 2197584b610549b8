"""Readiness and graceful drain: stop taking requests, let in-flight ones finish, then end
the rest honestly.

On SIGTERM the gateway turns ``/ready`` to 503 at once and answers new API requests with
503; in-flight requests get up to the drain timeout. Whatever is still running then is
cancelled with ``DRAIN``: streams end with an error event (see ``aichat.answer.sse``), whole
answers with a 503, never a silent cut.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import web

from aichat.core.errors import APIError
from aichat.core.exchange import Handler

log = logging.getLogger("aichat.lifecycle")

DRAIN = "aichat: draining"  # the cancel message that tells a request it is being drained


class ShuttingDown(APIError):
    """The gateway is shutting down (503); clients should retry on another replica."""

    status = 503
    type = "server_error"
    code = "server_shutting_down"

    def __init__(self) -> None:
        super().__init__(
            "The gateway is shutting down; retry the request.",
            headers={"Connection": "close", "Retry-After": "1"},
        )


@dataclass(slots=True)
class Lifecycle:
    """Whether the gateway takes requests, and which are in flight."""

    ready: bool = False
    started_at: int = 0
    draining: bool = False
    inflight: set[asyncio.Task[object]] = field(default_factory=set)

    async def drain(self, grace: float) -> int:
        """Refuse new requests, wait up to ``grace`` seconds for in-flight ones, end the rest.

        Returns how many requests had to be ended.
        """
        self.ready = False
        self.draining = True
        if self.inflight:
            log.info("draining %d in-flight requests (up to %.0f s)", len(self.inflight), grace)
            await asyncio.wait(set(self.inflight), timeout=grace)
        left = set(self.inflight)
        for task in left:
            task.cancel(DRAIN)
        if left:
            log.warning("ended %d requests still running after the drain timeout", len(left))
            await asyncio.wait(left, timeout=5)
        return len(left)


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)


def is_drain(exc: asyncio.CancelledError) -> bool:
    """Whether this cancellation is the drain ending a request (not a client leaving)."""
    return DRAIN in exc.args


@web.middleware
async def drain_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Track API requests in flight; refuse new ones while draining."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    lifecycle = request.app[LIFECYCLE]
    if lifecycle.draining:
        raise ShuttingDown()
    task = asyncio.current_task()
    assert task is not None
    lifecycle.inflight.add(task)
    try:
        return await handler(request)
    except asyncio.CancelledError as exc:
        if not is_drain(exc):
            raise
        task.uncancel()
        raise ShuttingDown() from None
    finally:
        lifecycle.inflight.discard(task)
