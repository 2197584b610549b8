"""Usage as each upstream API reports it -> ``Usage``, believed only within bounds.

Decisions:

- One reader per dialect: OpenAI Chat Completions (``prompt_tokens_details.cached_tokens``,
  DeepSeek's ``prompt_cache_hit_tokens``, llama.cpp's ``timings.cache_n`` where usage lacks
  the cache; ``completion_tokens_details.reasoning_tokens``), the Responses API
  (``input_tokens_details``, ``output_tokens_details.reasoning_tokens``) and Anthropic
  Messages (``input_tokens`` without the cache, ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens`` beside it; no count of thinking apart from
  ``output_tokens``). Each returns counts in ``Usage``'s one meaning.
- Reasoning tokens are part of the answer's (OpenAI's meaning), but xAI and some proxies of
  Gemini count them beside it: their ``total_tokens`` is prompt + answer + reasoning. A
  total that adds up only that way says so, and the reasoning is added to the answer, so
  budgets and prices count what the upstream bills.
- A number an upstream sends is a claim: a count that is not a JSON integer, is negative,
  is past ``MAX_TOKENS``, a cache larger than the prompt it is part of, or reasoning larger
  than the answer it is part of makes the whole usage unbelievable. It is then ignored —
  the gateway counts the answer itself, as for an upstream that reports nothing — and a
  warning says so (at most once a minute). Stored usage, budgets and metrics never see such
  a number.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from aichat.providers.base import Usage

log = logging.getLogger("aichat.usage")

# More tokens than any model's context and answer hold together, by a wide margin.
MAX_TOKENS = 100_000_000
_WARN_EVERY = 60.0


class _Unbelievable(ValueError):
    """A usage number out of bounds."""


_warned_at = -_WARN_EVERY


def _warn(dialect: str, why: str) -> None:
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= _WARN_EVERY:
        _warned_at = now
        log.warning(
            "upstream usage ignored: counted by the gateway instead",
            extra={"fields": {"api": dialect, "why": why}},
        )


def _count(value: Any, name: str, required: bool = False) -> int:
    """A token count as sent; absent (null) is 0 unless ``required``."""
    if value is None and not required:
        return 0
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        raise _Unbelievable(f"{name} = {str(value)[:40]}")
    return value


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _checked(dialect: str, read: Any, *args: Any) -> Usage | None:
    try:
        usage: Usage = read(*args)
    except _Unbelievable as exc:
        _warn(dialect, str(exc))
        return None
    if usage.cache_read_tokens + usage.cache_write_tokens > usage.prompt_tokens:
        _warn(dialect, "cached tokens exceed the prompt")
        return None
    if usage.reasoning_tokens > usage.completion_tokens:
        _warn(dialect, "reasoning tokens exceed the completion")
        return None
    return usage


def _answer(prompt: int, answer: int, reasoning: int, total: Any) -> int:
    """The answer's tokens, its reasoning included: added when ``total`` counts it apart."""
    if reasoning and total == prompt + answer + reasoning:
        return answer + reasoning
    return answer


def _openai(data: Mapping[str, Any]) -> Usage:
    usage = _object(data.get("usage"))
    prompt = _count(usage.get("prompt_tokens"), "prompt_tokens", required=True)
    completion = _count(usage.get("completion_tokens"), "completion_tokens", required=True)
    details = _object(usage.get("prompt_tokens_details"))
    if details.get("cached_tokens") is not None:
        cached = _count(details["cached_tokens"], "cached_tokens")
    elif usage.get("prompt_cache_hit_tokens") is not None:  # DeepSeek
        cached = _count(usage["prompt_cache_hit_tokens"], "prompt_cache_hit_tokens")
    else:  # llama.cpp reports its cache beside usage, in its timings
        cached = _count(_object(data.get("timings")).get("cache_n"), "timings.cache_n")
    answer_details = _object(usage.get("completion_tokens_details"))
    reasoning = _count(answer_details.get("reasoning_tokens"), "reasoning_tokens")
    completion = _answer(prompt, completion, reasoning, usage.get("total_tokens"))
    return Usage(prompt, completion, cached, 0, reasoning)


def openai_usage(data: Mapping[str, Any]) -> Usage | None:
    """The usage of a ``chat.completion`` or chunk ``data``; None without a believable one."""
    if not isinstance(data.get("usage"), dict):
        return None
    return _checked("chat", _openai, data)


def _responses(usage: Mapping[str, Any]) -> Usage:
    details = _object(usage.get("input_tokens_details"))
    prompt = _count(usage.get("input_tokens"), "input_tokens", required=True)
    output = _count(usage.get("output_tokens"), "output_tokens", required=True)
    answer_details = _object(usage.get("output_tokens_details"))
    reasoning = _count(answer_details.get("reasoning_tokens"), "reasoning_tokens")
    return Usage(
        prompt,
        _answer(prompt, output, reasoning, usage.get("total_tokens")),
        _count(details.get("cached_tokens"), "cached_tokens"),
        _count(details.get("cache_write_tokens"), "cache_write_tokens"),
        reasoning,
    )


def responses_usage(usage: Any) -> Usage | None:
    """A Responses API ``usage`` object as ``Usage``; None without a believable one."""
    if not isinstance(usage, dict):
        return None
    return _checked("responses", _responses, usage)


def _anthropic(usage: Mapping[str, Any]) -> Usage:
    uncached = _count(usage.get("input_tokens"), "input_tokens")
    read = _count(usage.get("cache_read_input_tokens"), "cache_read_input_tokens")
    written = _count(usage.get("cache_creation_input_tokens"), "cache_creation_input_tokens")
    output = _count(usage.get("output_tokens"), "output_tokens")
    return Usage(uncached + read + written, output, read, written)


def anthropic_usage(usage: Any) -> Usage | None:
    """An Anthropic ``usage`` object as ``Usage``; None without a believable one."""
    if not isinstance(usage, dict):
        return None
    return _checked("messages", _anthropic, usage)
