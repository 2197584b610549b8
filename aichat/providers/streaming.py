"""Upstream bytes -> lines -> SSE ``data:`` payloads, incremental and split-safe.

Network reads do not respect line or character boundaries. Lines are therefore cut on
bytes, only at ``\\n``, and decoded as whole lines: ``0x0A`` never occurs inside a multi-byte
UTF-8 sequence, so a complete line always holds complete characters, whatever the reads.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable

from aichat.core.errors import UpstreamError

DEFAULT_MAX_LINE = 1024 * 1024


class LineTooLong(UpstreamError):
    """An upstream line grew past the bound: an upstream gone wrong, or hostile (502)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"upstream sent a line longer than {limit} bytes (AICHAT_MAX_LINE_BYTES).",
            retryable=False,
        )


class LineDecoder:
    """Stateful bytes -> text lines splitter; ``feed`` what arrives, ``flush`` at the end.

    The unfinished line is kept in a ``bytearray``, which grows in place: an upstream that
    sends one endless line costs time linear in its length (not quadratic, as re-copying an
    immutable buffer on every read would), and ``LineTooLong`` past ``max_line`` bytes.
    """

    __slots__ = ("_buffer", "_max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._buffer = bytearray()
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[str]:
        """Return the lines completed by ``chunk`` (without their ``\\n`` or ``\\r\\n``)."""
        end = chunk.rfind(b"\n")
        buffer = self._buffer
        if end < 0:
            buffer += chunk
            if len(buffer) > self._max_line:
                raise LineTooLong(self._max_line)
            return []
        # One decode for all the lines: a UTF-8 sequence never spans a 0x0A byte, so this is
        # the same text as decoding line by line, and much cheaper for many short lines.
        if buffer:
            buffer += chunk[:end]
            text = buffer.decode("utf-8", "replace")
            buffer.clear()
        else:
            text = chunk[:end].decode("utf-8", "replace")
        if end + 1 < len(chunk):
            buffer += chunk[end + 1 :]
            if len(buffer) > self._max_line:
                raise LineTooLong(self._max_line)
        if "\r" in text:
            text = text.replace("\r\n", "\n")
            if text.endswith("\r"):  # the last line's, whose "\n" was cut off above
                text = text[:-1]
        return text.split("\n")

    def flush(self) -> list[str]:
        """Return the last line if the stream ended without a newline."""
        rest, self._buffer = self._buffer, bytearray()
        return [_decode(rest)] if rest else []

    @property
    def pending(self) -> int:
        """Bytes held back waiting for a newline (at most ``max_line``)."""
        return len(self._buffer)


def _decode(line: bytes | bytearray) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    # An upstream that sends invalid UTF-8 gets U+FFFD, never a crash of the stream.
    return line.decode("utf-8", "replace")


async def iter_line_batches(
    chunks: AsyncIterable[bytes], max_line: int = DEFAULT_MAX_LINE
) -> AsyncGenerator[list[str], None]:
    """The lines completed by each read, together: what arrived together is sent together."""
    decoder = LineDecoder(max_line)
    async for chunk in chunks:
        lines = decoder.feed(chunk)
        if lines:
            yield lines
    rest = decoder.flush()
    if rest:
        yield rest


def sse_payloads(lines: list[str]) -> list[str]:
    """The payloads of the ``data:`` lines among ``lines``; other lines are not data.

    As the SSE spec says, one space after the colon belongs to the syntax, not the payload.
    """
    return [
        line[6:] if line.startswith("data: ") else line[5:]
        for line in lines
        if line.startswith("data:")
    ]


class EventTooLong(UpstreamError):
    """An upstream event grew past the bound: an upstream gone wrong, or hostile (502)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"upstream sent an event longer than {limit} bytes (AICHAT_MAX_LINE_BYTES).",
            retryable=False,
        )


class EventSplitter:
    """Stateful bytes -> complete server-sent events, kept as bytes; ``feed`` what arrives.

    An event ends at a blank line. What a read completes is handed on as it came (``\\r\\n``
    line ends made ``\\n``), so a client of the same API gets the upstream's own bytes; the
    unfinished rest waits, at most ``max_event`` bytes of it. Only the bytes a read adds are
    searched for the end of an event: a trickled event costs time linear in its length.
    """

    __slots__ = ("_buffer", "_max_event")

    def __init__(self, max_event: int = DEFAULT_MAX_LINE) -> None:
        self._buffer = bytearray()
        self._max_event = max_event

    def feed(self, chunk: bytes) -> bytes:
        """The events ``chunk`` completes, each ending with its blank line (maybe none)."""
        buffer = self._buffer
        start = max(0, len(buffer) - 3)  # a separator may straddle two reads
        buffer += chunk
        if b"\r" in chunk:
            # A "\r\n" may straddle two reads too: re-read from before the chunk.
            buffer[start:] = buffer[start:].replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n", start)
        if end < 0:
            if len(buffer) > self._max_event:
                raise EventTooLong(self._max_event)
            return b""
        done = bytes(buffer[: end + 2])
        del buffer[: end + 2]
        if len(buffer) > self._max_event:
            raise EventTooLong(self._max_event)
        return done

    @property
    def pending(self) -> bytes:
        """What arrived after the last complete event."""
        return bytes(self._buffer)


def sse_events(data: bytes) -> list[tuple[bytes, bytes]]:
    """``(name, payload)`` of each complete event in ``data`` (the ``event:`` line's value, or
    b"" without one; the ``data:`` lines joined by ``\\n``). Comments and ids are skipped."""
    events = []
    for block in data.split(b"\n\n"):
        if not block:
            continue
        name = b""
        lines = []
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                lines.append(line[6:] if line.startswith(b"data: ") else line[5:])
            elif line.startswith(b"event:"):
                name = line[6:].strip()
        if lines:
            events.append((name, b"\n".join(lines)))
    return events
