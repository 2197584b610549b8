"""The hop: what the extra network hop alone costs, with no HTTP library at all.

A proxy written on bare asyncio protocols (uvloop): it waits for a whole request (headers,
then a ``Content-Length`` body), sends those same bytes to the fake upstream over a
kept-alive connection, and passes the answer's bytes back as they arrive until its chunked
body ends. Nothing is parsed beyond that and nothing is rewritten, so it only serves the
OpenAI stream scenario, where the fake upstream accepts the client's request as it is.

Its row in the table is the lower bound of any proxy in Python on this machine: two more
sockets, two more wake-ups per request. The distance from ``hop`` to ``floor`` is what
aiohttp's server and client add, and from ``floor`` to ``aichat`` aichat's own work. Run it
as ``python -m bench.hop --port N --upstream URL``; it answers ``GET /ready`` once started.
"""

from __future__ import annotations

import asyncio
import gc
from typing import cast
from urllib.parse import urlsplit

from bench.loops import run_proxy

_HEAD_END = b"\r\n\r\n"
_CHUNKED_END = b"\r\n0\r\n\r\n"  # the last chunk after the body's last data chunk
_READY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Pool:
    """Idle upstream connections, most recently used first."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[_Upstream] = []
        self._connecting: set[asyncio.Task[None]] = set()

    def send(self, client: _Client, request: bytes) -> None:
        """``request`` to the upstream on an idle connection, or on a new one."""
        if self.idle:
            self.idle.pop().serve(client, request)
            return
        task = asyncio.get_running_loop().create_task(self._connect(client, request))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, client: _Client, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(lambda: _Upstream(self), self.host, self.port)
        upstream.serve(client, request)


class _Upstream(asyncio.Protocol):
    """One connection to the upstream, carrying one client's answer at a time."""

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._client: _Client | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def serve(self, client: _Client, request: bytes) -> None:
        """Send ``request``; what comes back goes to ``client``."""
        assert self._transport is not None
        self._client, self._tail = client, b""
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self._client is None:
            return
        self._client.send(data)
        # The end marker may straddle two reads: keep the last few bytes to look across.
        end = self._tail + data[-len(_CHUNKED_END) :]
        self._tail = end[-len(_CHUNKED_END) :]
        if end.endswith(_CHUNKED_END):
            self._client = None
            self._pool.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self._pool.idle:
            self._pool.idle.remove(self)
        if self._client is not None:
            self._client.close()


class _Client(asyncio.Protocol):
    """One client connection: whole requests in, the upstream's bytes out."""

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            return
        head = self._buffer[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        size = end + len(_HEAD_END) + length
        if len(self._buffer) < size:
            return
        request, self._buffer = self._buffer[:size], self._buffer[size:]
        if request.startswith(b"GET /ready "):
            self.send(_READY)
            return
        self._pool.send(self, request)

    def send(self, data: bytes) -> None:
        """Bytes for the client, as they come."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        """End the client's connection (its upstream broke)."""
        if self._transport is not None:
            self._transport.close()


async def serve(port: int, upstream: str) -> None:
    """Listen on 127.0.0.1 until stopped."""
    parts = urlsplit(upstream)
    if parts.hostname is None or parts.port is None:
        raise SystemExit(f"--upstream needs a host and a port: {upstream}")
    pool = _Pool(parts.hostname, parts.port)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(pool), "127.0.0.1", port)
    gc.freeze()
    async with server:
        await server.serve_forever()


def main() -> None:
    """``python -m bench.hop --port N --upstream URL``."""
    run_proxy(serve, __doc__ or "")


if __name__ == "__main__":
    main()
