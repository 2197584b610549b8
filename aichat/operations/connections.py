"""Client connections: how long one may take to send a request head, and to stay idle.

aiohttp closes a connection that has waited ``keepalive_timeout`` for a request head, from
its opening and from the end of each answer, but a client that trickles header bytes slower
than that, or one that opens many connections and sends nothing, holds a descriptor for as
long as that timeout lasts. Here a request head must also be complete within
``header_timeout``, counted from the connection's opening (a client opens one to send a
request at once) and from the first byte of each later head. An idle keep-alive connection
that sends nothing is left to aiohttp's ``keepalive_timeout``.

What the two cannot do is limit how many connections one address opens: a reverse proxy
in front does that (README, "Production"). The ``Server`` header names no library version.

Descriptors: at start the soft limit on open files is raised to the hard one (as Go's
runtime and nginx's ``worker_rlimit_nofile`` do; systemd's default soft limit is 1,024).
Client connections are held below that limit, less what upstream requests, Redis and the
process itself need (``client_connection_limit``): a connection past it first closes idle
ones (waiting for a request head), the longest idle first, as nginx drains its reusable
connections, so that descriptors go to clients with requests. One that has sent nothing yet
is idle only after ``GRACE``: a client sends its request a round trip after connecting, and
a crowd of arrivals must not close a newcomer before that. With none to close, a newcomer is
let in while the descriptors kept for upstreams last (``OWN_DESCRIPTORS`` short of the
limit), then gets a canned 503 and is closed, before anything of it is read. A look that
found none to close holds for ``RESCAN`` (one that turns idle meanwhile is found by the
first newcomer after it), so a flood of newcomers costs no pass over every connection each.
Closing and refusing count in ``aichat_connections_shed_total``; the connections open now
are ``aichat_client_connections``. Without this, a process out of descriptors stops
accepting, and idle connections that re-open as soon as they are closed keep real clients
out.

The watchdog reads two attributes aiohttp keeps private (whether the connection waits for a
head, and how many it has parsed): ``tests/e2e/test_connections.py`` fails if they change.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
import resource
from collections.abc import Iterator
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aichat.operations.metrics import METRICS

SERVER_NAME = "aichat"
GRACE = 1.0  # seconds a connection that has sent nothing yet is never idle
# Seconds a look over every connection that found none idle holds: a flood of newcomers
# past the limit costs one look per RESCAN, not one each (thousands of connections apiece).
RESCAN = 0.1
# Descriptors the process needs besides client connections and upstream requests: the
# listening socket, the event loop's, logs, config and certificate files.
OWN_DESCRIPTORS = 64
_ERROR = {
    "message": "The gateway has too many open connections; try again shortly.",
    "type": "server_error",
    "param": None,
    "code": "server_overloaded",
}
_BODY = json.dumps({"error": _ERROR}).encode()
# The answer to a connection refused for want of descriptors: written whole, nothing read.
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nServer: " + SERVER_NAME.encode() + b"\r\n"
    b"Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open descriptors to the hard one; the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an unlimited hard limit the kernel caps lower
            return soft
    return hard


def client_connection_limits(reserved: int) -> tuple[float, float]:
    """How many client connections may be open at once: the soft descriptor limit less
    ``reserved`` (upstream requests, Redis) and ``OWN_DESCRIPTORS`` (a quarter of the limit
    at least); and how many while idle ones are too young to close."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return math.inf, math.inf
    most = soft - OWN_DESCRIPTORS
    return min(most, max(soft // 4, most - reserved)), most


class _Connection(RequestHandler):
    """aiohttp's connection handler, closing a connection whose request head is overdue."""

    __slots__ = ("_head_count", "_head_timeout", "_head_timer", "_server", "active_at")

    def __init__(self, manager: _Server, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager
        self._head_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0
        self.active_at = 0.0  # when the client last sent anything

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.active_at = self._loop.time()
        if not self._server.admit(self):
            assert self.transport is not None  # set by aiohttp's connection_made
            self.transport.write(REFUSED)
            self.force_close()  # the transport sends what it holds, then closes
            return
        self._start_head_timer()

    def idle(self, now: float) -> bool:
        """Whether the connection waits for a request head, and has sent something or been
        open for ``GRACE`` seconds."""
        if not self._waiting_for_head():
            return False
        return self._request_count > 0 or now - self.active_at >= GRACE

    def data_received(self, data: bytes) -> None:
        self.active_at = self._loop.time()
        super().data_received(data)
        if self._head_timer is not None and self._request_count != self._head_count:
            self._stop_head_timer()  # the head it was waiting for arrived
        if self._head_timer is None and self._waiting_for_head():
            self._start_head_timer()  # the first bytes of the next head

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def handle_error(self, *args: Any, **kwargs: Any) -> web.StreamResponse:
        """aiohttp's own error answers (a malformed request) without its version either."""
        response = super().handle_error(*args, **kwargs)
        response.headers[hdrs.SERVER] = SERVER_NAME
        return response

    def _waiting_for_head(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _start_head_timer(self) -> None:
        self._head_count = self._request_count
        self._head_timer = self._loop.call_later(self._head_timeout, self._head_overdue)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._request_count == self._head_count:
            self.force_close()


class _Server(web.Server):
    """aiohttp's server, making ``_Connection``s, and keeping their number under
    ``max_connections``."""

    header_timeout = 10.0
    max_connections = math.inf  # beyond which idle connections are closed
    most_connections = math.inf  # beyond which, with none idle, newcomers are refused
    rescan_at = 0.0  # before this time, none is idle (``RESCAN``)
    shed: dict[str, int]

    def __call__(self) -> RequestHandler:
        return _Connection(self, self.header_timeout, loop=self._loop, **self._kwargs)

    def admit(self, new: _Connection) -> bool:
        """Whether ``new`` may stay open: under the limit, or once idle ones are closed."""
        count = len(self._connections)
        if count <= self.max_connections:
            return True
        now = self._loop.time()
        idle: list[_Connection] = []
        if now >= self.rescan_at:
            idle = [c for c in self._connections if isinstance(c, _Connection) and c.idle(now)]
            if not idle:
                self.rescan_at = now + RESCAN
        if not idle:
            if count <= self.most_connections:
                return True
            self.shed["refused"] += 1
            return False
        # A batch, so that a crowd of idle connections is not scanned once per newcomer.
        batch = max(1, int(min(self.max_connections, 1 << 20)) // 32)
        for oldest in heapq.nsmallest(batch, idle, key=lambda c: c.active_at):
            oldest.force_close()
            self.shed["idle_closed"] += 1
        return True


class _ConnectionMetrics(Collector):
    def __init__(self, server: _Server) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "aichat_client_connections",
            "Client connections open now.",
            value=len(self._server.connections),
        )
        shed = CounterMetricFamily(
            "aichat_connections_shed",
            "Client connections closed while idle, or refused at once, for want of descriptors.",
            labels=["action"],
        )
        for action, count in self._server.shed.items():
            shed.add_metric([action], count)
        yield shed


class GatewayRunner(web.AppRunner):
    """An ``AppRunner`` whose connections enforce ``header_timeout``, and whose number keeps
    to ``connection_limits`` (see ``client_connection_limits``)."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float,
        connection_limits: tuple[float, float] = (math.inf, math.inf),
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self._limits = connection_limits

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app's own server, re-classed rather than rebuilt: aiohttp configures it in
        # ways no public constructor argument reproduces.
        server.__class__ = _Server
        assert isinstance(server, _Server)
        server.header_timeout = self._header_timeout
        server.max_connections, server.most_connections = self._limits
        server.shed = {"idle_closed": 0, "refused": 0}
        self.app[METRICS].registry.register(_ConnectionMetrics(server))
        return server
