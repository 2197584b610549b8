"""Token counts for upstreams that report no usage.

With the ``tokens`` extra installed (``pip install 'aichat[tokens]'``), counts use the real
``o200k_base`` tokenizer of the gpt-4o family via ``bpe-openai``, which ships its data and works
offline. Without it, the estimate is one token per four UTF-8 bytes, rounded up: close for
English prose, rough for code and other scripts.

The tokenizer costs about 140 MB and a second of CPU to load, so it is loaded only by
``load_tokenizer``, which the application calls at start-up when a route counts locally
(aichats, mock). A configuration of OpenAI-compatible upstreams only, whose usage the
upstream reports, never pays for it: its few local counts (the input tokens announced at the
start of an Anthropic stream, ``count_tokens``) are estimates.

Bounded: the tokenizer counts at most ``EXACT_UP_TO`` characters of one text or one prompt
(a few milliseconds); longer ones are estimated from their length, on every path (usage,
the Anthropic stream's start, ``count_tokens``). The tokenizer itself refuses texts of a
million characters or 200,000 tokens, which a request under the body limit can hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# OpenAI's chat format costs a few tokens per message around its content, and the reply is
# primed with three more; counting them keeps estimates close to what OpenAI bills.
_PER_MESSAGE = 3
_REPLY_PRIMING = 3
EXACT_UP_TO = 16 * 1024  # characters counted with the tokenizer (about 3 ms of CPU)


def _estimate(text: str) -> int:
    return (len(text.encode("utf-8")) + 3) // 4


class _Counter:
    """The process's counter: the estimate until ``load_tokenizer`` finds the real one."""

    name = "estimate"
    count: Callable[[str], int] = staticmethod(_estimate)


def load_tokenizer() -> str:
    """Count with the ``o200k_base`` tokenizer from now on, if it is installed (once per
    process); the name of what counts."""
    if _Counter.name == "estimate":
        try:
            import bpe_openai
        except ImportError:
            return _Counter.name
        encoding = bpe_openai.get_encoding("o200k_base")

        def count(text: str) -> int:
            # User text is never special tokens: "<|endoftext|>" in a message is just text.
            return len(encoding.encode_ordinary(text))

        _Counter.count, _Counter.name = count, "o200k_base"
    return _Counter.name


def count_tokens(text: str) -> int:
    """Tokens of ``text``: counted up to ``EXACT_UP_TO`` characters, estimated beyond."""
    return _Counter.count(text) if len(text) <= EXACT_UP_TO else _estimate(text)


class TextTally:
    """The tokens of a text that arrives in pieces, in bounded memory: pieces are kept up to
    ``EXACT_UP_TO`` characters and counted; past it only their length is, and estimated (four
    characters a token)."""

    __slots__ = ("_chars", "_texts")

    def __init__(self) -> None:
        self._texts: list[str] | None = []  # None once past ``EXACT_UP_TO``
        self._chars = 0

    def add(self, text: str) -> None:
        """One more piece."""
        self._chars += len(text)
        if self._texts is not None:
            if self._chars > EXACT_UP_TO:
                self._texts = None
            else:
                self._texts.append(text)

    def tokens(self) -> int:
        """Tokens of all the pieces so far."""
        if self._texts is None:
            return (self._chars + 3) // 4
        return count_tokens("".join(self._texts)) if self._texts else 0


def prompt_tokens(texts: Sequence[str]) -> int:
    """Tokens of a conversation given the text of each message (estimated when all of them
    together are longer than ``EXACT_UP_TO`` characters)."""
    exact = sum(len(text) for text in texts) <= EXACT_UP_TO
    count = count_tokens if exact else _estimate
    return _REPLY_PRIMING + sum(_PER_MESSAGE + count(text) for text in texts)
