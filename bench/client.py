"""A lean HTTP/1.1 keep-alive client that timestamps answer markers as bytes arrive.

Why not aiohttp's client: the load generator shares a core with the fake upstream, and a
stream through a gateway arrives as many small reads. aiohttp wakes a task per read; this
client handles each read in the protocol callback, so the load generator stays cheap and the
gateway, not the client, is what runs out of CPU. It understands exactly what the servers
under test send: a status line, headers, then a ``Content-Length``, chunked or
close-delimited body.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import cast

_HEAD_END = b"\r\n\r\n"


@dataclass
class Response:
    """One answer: status, decoded body and when each marker was first seen."""

    status: int = 0
    body: bytearray = field(default_factory=bytearray)
    marker_times: list[float] = field(default_factory=list)
    keep_alive: bool = True


class _BodyParser:
    """Incremental parser of one response; ``feed`` returns True once it is complete."""

    __slots__ = ("_buffer", "_chunked", "_left", "_markers", "_scan", "_state", "response")

    def __init__(self, markers: tuple[bytes, ...]) -> None:
        self.response = Response()
        self._markers = markers
        self._buffer = bytearray()
        self._state = "head"
        self._chunked = False
        self._left = -1  # body bytes still expected; -1: until the connection closes
        self._scan = 0

    def feed(self, data: bytes, now: float) -> bool:
        self._buffer += data
        while True:
            progressed = getattr(self, "_" + self._state)()
            if self._state == "done":
                self._see_markers(now)
                return True
            if not progressed:
                self._see_markers(now)
                return False

    def end_of_stream(self, now: float) -> bool:
        """The connection closed: complete only for a close-delimited body."""
        self._see_markers(now)
        return self._state == "body" and self._left < 0

    def _head(self) -> bool:
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            return False
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        self.response.status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        self.response.keep_alive = headers.get("connection") != "close"
        self._chunked = "chunked" in headers.get("transfer-encoding", "")
        if self._chunked:
            self._state = "size"
        else:
            self._left = int(headers.get("content-length", -1))
            self._state = "body" if self._left != 0 else "done"
        return True

    def _size(self) -> bool:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            return False
        size = int(bytes(self._buffer[:end]).split(b";", 1)[0], 16)
        del self._buffer[: end + 2]
        self._left = size
        self._state = "chunk" if size else "trailer"
        return True

    def _chunk(self) -> bool:
        # The chunk's data, then its CRLF.
        if len(self._buffer) < self._left + 2:
            take = min(len(self._buffer), self._left)
            self.response.body += self._buffer[:take]
            del self._buffer[:take]
            self._left -= take
            return False
        self.response.body += self._buffer[: self._left]
        del self._buffer[: self._left + 2]
        self._state = "size"
        return True

    def _trailer(self) -> bool:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            return False
        del self._buffer[: end + 2]
        if end == 0:
            self._state = "done"
        return True

    def _body(self) -> bool:
        if self._left < 0:
            self.response.body += self._buffer
            self._buffer.clear()
            return False
        take = min(len(self._buffer), self._left)
        self.response.body += self._buffer[:take]
        del self._buffer[:take]
        self._left -= take
        if self._left == 0:
            self._state = "done"
            return True
        return False

    def _see_markers(self, now: float) -> None:
        times = self.response.marker_times
        body = self.response.body
        while len(times) < len(self._markers):
            at = body.find(self._markers[len(times)], self._scan)
            if at < 0:
                return
            times.append(now)
            self._scan = at + 1


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends raw bytes and awaits the answer."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self._parser: _BodyParser | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self.on_first_marker: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            return
        done = self._parser.feed(data, time.perf_counter())
        first = self.on_first_marker
        if first is not None and not first.done() and self._parser.response.marker_times:
            first.set_result(None)
        if done:
            self._finish(self._parser.response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is not None and self._parser.end_of_stream(time.perf_counter()):
            self._finish(self._parser.response)
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    def _finish(self, response: Response) -> None:
        self._parser = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(response)
        if not response.keep_alive and self.transport is not None:
            self.transport.close()

    def request(self, raw: bytes, markers: tuple[bytes, ...]) -> asyncio.Future[Response]:
        """Send one request; the future resolves with the whole response."""
        assert self.transport is not None
        assert self._parser is None, "one request at a time per connection"
        self._parser = _BodyParser(markers)
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self._waiter

    def close(self) -> None:
        """Drop the connection (the server sees a client that went away)."""
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int) -> Connection:
    """A new connection to ``host:port``."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    return protocol


def raw_request(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """A complete ``POST`` request, built once per phase and sent as is."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
