"""Token counts for upstreams that report no usage.

With the ``tokens`` extra installed (``pip install 'aichat[tokens]'``), counts use the real
``o200k_base`` tokenizer of the gpt-4o family via ``bpe-openai``, which ships its data and works
offline. Without it, the estimate is one token per four UTF-8 bytes, rounded up: close for
English prose, rough for code and other scripts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

# OpenAI's chat format costs a few tokens per message around its content, and the reply is
# primed with three more; counting them keeps estimates close to what OpenAI bills.
_PER_MESSAGE = 3
_REPLY_PRIMING = 3


def _estimate(text: str) -> int:
    return (len(text.encode("utf-8")) + 3) // 4


def _load_counter() -> tuple[str, Callable[[str], int]]:
    try:
        import bpe_openai
    except ImportError:
        return "estimate", _estimate
    encoding = bpe_openai.get_encoding("o200k_base")

    def count(text: str) -> int:
        # User text is never special tokens: "<|endoftext|>" in a message is just text.
        return len(encoding.encode_ordinary(text))

    return "o200k_base", count


TOKENIZER, count_tokens = _load_counter()


def prompt_tokens(texts: Iterable[str]) -> int:
    """Tokens of a conversation given the text of each message."""
    total = _REPLY_PRIMING
    for text in texts:
        total += _PER_MESSAGE + count_tokens(text)
    return total
