"""A provider with no upstream: deterministic answers at a configurable pace.

For client developers' tests, demos and benchmarks. It answers with a configured text, or
echoes the last user message, in word-sized pieces: ``first_token_delay`` seconds before the
first, then ``tokens_per_second`` pieces a second (0: as fast as the client reads). With
``fail_after`` it fails like a broken upstream after that many pieces (0: before the first),
so clients can test their error handling.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from aichat.core.errors import UpstreamError
from aichat.core.prompt import Api, Prompt
from aichat.core.schemas import last_user_text, prompt_text
from aichat.core.tokens import count_tokens, prompt_tokens
from aichat.providers.base import Event, Finish, TextDelta, Usage

# A piece is a run of spaces and what follows up to the next space: joining them gives back
# the text exactly.
_PIECE = re.compile(r"\s*\S+|\s+$")


def pieces(text: str) -> list[str]:
    """``text`` cut into word-sized pieces whose concatenation is ``text``."""
    return _PIECE.findall(text)


class MockProvider:
    """Answers locally, deterministically, at a set pace."""

    name = "mock"
    api: Api = "chat"

    def __init__(
        self,
        text: str | None,
        tokens_per_second: float,
        first_token_delay: float,
        fail_after: int | None = None,
    ) -> None:
        self._text = text
        self._fail_after = fail_after
        self._gap = 1 / tokens_per_second if tokens_per_second else 0.0
        self._first_delay = first_token_delay

    async def stream(self, prompt: Prompt, upstream_model: str) -> AsyncGenerator[Event, None]:
        """Yield the answer piece by piece, then exact usage and ``Finish``."""
        request = prompt.chat()
        answer = self._text if self._text is not None else last_user_text(request)
        if self._first_delay:
            await asyncio.sleep(self._first_delay)
        for i, piece in enumerate(pieces(answer)):
            if i == self._fail_after:
                raise UpstreamError(f"{self.name} upstream failed on purpose after {i} pieces.")
            if i and self._gap:
                await asyncio.sleep(self._gap)
            yield TextDelta(piece)
        yield Usage(prompt_tokens(prompt_text(request)), count_tokens(answer))
        yield Finish("stop")
