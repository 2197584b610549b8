"""Raw HTTP/1.1 over a socket: requests no client library would send, answers byte for byte."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ERROR_KEYS = {"message", "type", "param", "code"}


@dataclass(frozen=True)
class RawAnswer:
    """One answer as it came off the wire."""

    status: int
    head: bytes  # status line and header lines, exactly as sent
    headers: dict[str, str]  # lower-cased names
    body: bytes  # de-chunked

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def http_request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    length: bool = True,
) -> bytes:
    """A request with ``Connection: close``; ``Content-Length`` unless ``length`` is False."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


def parse_answer(raw: bytes) -> RawAnswer:
    """Split an HTTP/1.x answer into status, headers and body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return RawAnswer(int(status_line.split()[1]), head, headers, body)


def port_of(url: str) -> int:
    """The port of a ``http://127.0.0.1:<port>`` URL."""
    port = urlsplit(url).port
    assert port is not None, url
    return port


async def exchange(url: str, request: bytes) -> RawAnswer:
    """Send ``request`` to the server at ``url`` and read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
    return parse_answer(raw)


def openai_error(answer: RawAnswer, status: int) -> dict[str, Any]:
    """The ``error`` object of an answer that must be an OpenAI error with ``status``."""
    assert answer.status == status, answer.head + answer.body[:500]
    assert answer.headers["content-type"].startswith("application/json"), answer.head
    body = answer.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str)
    assert error["message"]
    return error
