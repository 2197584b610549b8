"""Upstream bytes -> lines -> SSE ``data:`` payloads, incremental and split-safe.

Network reads do not respect line or character boundaries. Lines are therefore cut on
bytes, only at ``\\n``, and decoded as whole lines: ``0x0A`` never occurs inside a multi-byte
UTF-8 sequence, so a complete line always holds complete characters, whatever the reads.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable


class LineDecoder:
    """Stateful bytes -> text lines splitter; ``feed`` what arrives, ``flush`` at the end."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        """Return the lines completed by ``chunk`` (without their ``\\n`` or ``\\r\\n``)."""
        if b"\n" not in chunk:
            self._buffer += chunk
            return []
        block, _, self._buffer = (self._buffer + chunk).rpartition(b"\n")
        # One decode for all the lines: a UTF-8 sequence never spans a 0x0A byte, so this is
        # the same text as decoding line by line, and much cheaper for many short lines.
        text = block.decode("utf-8", "replace")
        if "\r" in text:
            text = text.replace("\r\n", "\n")
            if text.endswith("\r"):  # the last line's, whose "\n" was cut off above
                text = text[:-1]
        return text.split("\n")

    def flush(self) -> list[str]:
        """Return the last line if the stream ended without a newline."""
        rest, self._buffer = self._buffer, b""
        return [_decode(rest)] if rest else []

    @property
    def pending(self) -> int:
        """Bytes held back waiting for a newline (bounded by the longest upstream line)."""
        return len(self._buffer)


def _decode(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    # An upstream that sends invalid UTF-8 gets U+FFFD, never a crash of the stream.
    return line.decode("utf-8", "replace")


async def iter_line_batches(chunks: AsyncIterable[bytes]) -> AsyncGenerator[list[str], None]:
    """The lines completed by each read, together: what arrived together is sent together."""
    decoder = LineDecoder()
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
