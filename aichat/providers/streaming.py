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
