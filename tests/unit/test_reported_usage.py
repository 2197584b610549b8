"""Usage as each upstream API reports it: cached tokens read in every dialect, and numbers
out of bounds never believed."""

from __future__ import annotations

import json

import pytest

from aichat.providers.base import Usage
from aichat.providers.openai import reported_usage
from aichat.providers.reported import (
    MAX_TOKENS,
    anthropic_usage,
    openai_usage,
    responses_usage,
)


def test_openai_cached_tokens_are_read_from_prompt_tokens_details() -> None:
    data = {
        "usage": {
            "prompt_tokens": 256,
            "completion_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 255},
        }
    }
    assert openai_usage(data) == Usage(256, 9, cache_read_tokens=255)


def test_deepseek_cache_hits_count_as_cached_tokens() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64}
    assert openai_usage({"usage": usage}) == Usage(100, 5, cache_read_tokens=64)


def test_llama_cpp_timings_give_the_cache_where_usage_lacks_it() -> None:
    data = {"usage": {"prompt_tokens": 38, "completion_tokens": 4}, "timings": {"cache_n": 37}}
    assert openai_usage(data) == Usage(38, 4, cache_read_tokens=37)


def test_responses_usage_keeps_cached_and_written_tokens() -> None:
    usage = {
        "input_tokens": 256,
        "input_tokens_details": {"cached_tokens": 255},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 259,
    }
    assert responses_usage(usage) == Usage(256, 3, cache_read_tokens=255)


def test_anthropic_input_tokens_exclude_the_cache_so_the_prompt_is_their_sum() -> None:
    usage = {
        "input_tokens": 1,
        "cache_read_input_tokens": 255,
        "cache_creation_input_tokens": 10,
        "output_tokens": 7,
    }
    assert anthropic_usage(usage) == Usage(266, 7, cache_read_tokens=255, cache_write_tokens=10)


@pytest.mark.parametrize(
    "prompt",
    [-1_000_005, 2**63, MAX_TOKENS + 1, 1.5, "12", True, None],
    ids=["negative", "2**63", "past-max", "float", "string", "bool", "null"],
)
def test_an_unbelievable_count_makes_the_whole_usage_ignored(prompt: object) -> None:
    assert openai_usage({"usage": {"prompt_tokens": prompt, "completion_tokens": 3}}) is None
    assert responses_usage({"input_tokens": prompt, "output_tokens": 3}) is None
    assert anthropic_usage({"input_tokens": 1, "output_tokens": prompt}) is None or (
        prompt is None  # Anthropic's message_start may leave output_tokens out: zero so far
    )


def test_a_cache_larger_than_its_prompt_is_not_believed() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 11},
    }
    assert openai_usage({"usage": usage}) is None


def test_a_usage_key_spelled_with_a_json_escape_is_still_found() -> None:
    chunk = '{"id":"x","choices":[],"\\u0075sage":{"prompt_tokens":5,"completion_tokens":2}}'
    assert json.loads(chunk)["usage"]["prompt_tokens"] == 5
    assert reported_usage(chunk) == Usage(5, 2)


def test_an_escaped_negative_usage_refunds_nothing() -> None:
    chunk = '{"choices":[],"\\u0075sage":{"prompt_tokens":-1000005,"completion_tokens":0}}'
    assert reported_usage(chunk) is None
