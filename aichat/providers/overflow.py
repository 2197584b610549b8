"""Context overflow: an upstream saying "the prompt does not fit", in any server's words.

Decisions:

- Recognised by what each server writes, whatever its status: OpenAI's and the Responses
  API's ``code: "context_length_exceeded"``; Anthropic's "prompt is too long: N tokens > M
  maximum"; llama.cpp's ``type: "exceed_context_size_error"`` with ``n_prompt_tokens`` and
  ``n_ctx``; vLLM's "This model's maximum context length is M tokens. However, you requested
  N tokens (P in the messages, ...)" or "... your prompt contains [at least] P input tokens";
  Ollama's "the input length exceeds the context length". Anything else is not an overflow.
- The prompt's size and the window are kept when the upstream gave them, so that each client
  is told them in its API's words (``aichat.core.errors.ContextOverflow``).
- Bounded: only the first ``MAX_TEXT`` characters of a message are searched, by patterns
  without nested repetition, and counts have at most nine digits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_TEXT = 2000

_DIGITS = r"(\d{1,9})"
# Anthropic's, with both counts.
_TOO_LONG = re.compile(rf"prompt is too long: {_DIGITS} tokens > {_DIGITS} maximum")
# OpenAI's and vLLM's window; the prompt's size follows in one of three phrasings.
_WINDOW = re.compile(rf"maximum context length is {_DIGITS} tokens")
_PROMPT = (
    re.compile(rf"\b{_DIGITS} in the messages"),  # vLLM: "(P in the messages, C in the ...)"
    re.compile(rf"your prompt contains (?:at least )?{_DIGITS} input tokens"),  # newer vLLM
    re.compile(rf"your messages resulted in {_DIGITS} tokens"),  # OpenAI
)
# Ollama's; llama.cpp's message where its type was lost on the way; Anthropic's without counts.
_PHRASES = (
    "exceeds the context length",
    "exceeds the available context size",
    "prompt is too long",
)
_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})


@dataclass(frozen=True, slots=True)
class Overflow:
    """A prompt too long for its model: its tokens and the window, where the upstream said."""

    tokens: int | None = None
    window: int | None = None


def _count(value: Any) -> int | None:
    """A count the upstream sent as a number (bools are not counts)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**9:
        return value
    return None


def _first(patterns: tuple[re.Pattern[str], ...], text: str) -> int | None:
    for pattern in patterns:
        found = pattern.search(text)
        if found is not None:
            return int(found[1])
    return None


def context_overflow(details: Mapping[str, Any]) -> Overflow | None:
    """The overflow an upstream's error object (``message``, ``type``, ``code``, and
    llama.cpp's counts) reports; None when it reports another error."""
    message = details.get("message")
    text = message[:MAX_TEXT] if isinstance(message, str) else ""
    found = _TOO_LONG.search(text)
    if found is not None:
        return Overflow(int(found[1]), int(found[2]))
    window = _WINDOW.search(text)
    if window is not None:
        return Overflow(_first(_PROMPT, text), int(window[1]))
    kinds = {str(details.get("type")), str(details.get("code"))}
    if kinds & _CODES or any(phrase in text for phrase in _PHRASES):
        return Overflow(_count(details.get("n_prompt_tokens")), _count(details.get("n_ctx")))
    return None
