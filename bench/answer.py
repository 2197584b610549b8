"""The fixed answer every benchmark request gets, and how a request asks for its shape.

The upstream's behaviour is chosen per request by a directive in the last user message
(``chunks=20 pace_ms=0 hold_s=0``), so one fake upstream serves every scenario and the
gateway, which forwards the message text untouched, needs no benchmark-specific setting.

Each chunk of the answer carries a unique marker (``w0000``, ``w0001``, ...). The load
generator times the arrival of each marker, which gives time to first token and the gaps
between tokens whatever the wire format (aichats text, OpenAI JSON, one whole completion).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIRECTIVE = re.compile(r"(chunks|pace_ms|hold_s)=([0-9.]+)")
# Never let a typo in a directive keep a connection open for long.
MAX_HOLD_S = 120.0
MAX_CHUNKS = 10_000


@dataclass(frozen=True, slots=True)
class Shape:
    """How the fake upstream answers one request."""

    chunks: int = 20
    pace_ms: float = 0.0  # pause between chunks; 0 writes them back to back
    hold_s: float = 0.0  # pause after the first chunk (idle open streams)

    def directive(self) -> str:
        """The user-message text that asks the upstream for this shape."""
        return f"bench chunks={self.chunks} pace_ms={self.pace_ms:g} hold_s={self.hold_s:g}"

    @classmethod
    def parse(cls, text: str) -> Shape:
        """The shape a message asks for; defaults for anything missing or out of range."""
        values = {key: float(value) for key, value in _DIRECTIVE.findall(text)}
        return cls(
            chunks=max(1, min(MAX_CHUNKS, int(values.get("chunks", 20)))),
            pace_ms=max(0.0, values.get("pace_ms", 0.0)),
            hold_s=max(0.0, min(MAX_HOLD_S, values.get("hold_s", 0.0))),
        )


def piece(index: int) -> str:
    """The text of chunk ``index``: a marker plus a word, about the size of a real token."""
    return f"w{index:04d} "


def marker(index: int) -> bytes:
    """The bytes the load generator looks for to see chunk ``index`` arrive."""
    return f"w{index:04d}".encode()
