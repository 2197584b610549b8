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

The watchdog reads two attributes aiohttp keeps private (whether the connection waits for a
head, and how many it has parsed): ``tests/e2e/test_connections.py`` fails if they change.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

SERVER_NAME = "aichat"


class _Connection(RequestHandler):
    """aiohttp's connection handler, closing a connection whose request head is overdue."""

    __slots__ = ("_head_count", "_head_timeout", "_head_timer")

    def __init__(self, manager: web.Server, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
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
    """aiohttp's server, making ``_Connection``s."""

    header_timeout = 10.0

    def __call__(self) -> RequestHandler:
        return _Connection(self, self.header_timeout, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An ``AppRunner`` whose connections enforce ``header_timeout``."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app's own server, re-classed rather than rebuilt: aiohttp configures it in
        # ways no public constructor argument reproduces.
        server.__class__ = _Server
        assert isinstance(server, _Server)
        server.header_timeout = self._header_timeout
        return server
