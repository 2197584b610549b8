"""Usage as each upstream API reports it: cached and reasoning tokens read in every dialect
that has them, and numbers out of bounds never believed."""

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


def test_openai_reasoning_tokens_are_read_from_completion_tokens_details() -> None:
    usage = {  # as o4-mini reports it
        "prompt_tokens": 20,
        "completion_tokens": 530,
        "total_tokens": 550,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 512,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    assert openai_usage({"usage": usage}) == Usage(20, 530, reasoning_tokens=512)


def test_deepseek_cache_hits_count_as_cached_tokens() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64}
    assert openai_usage({"usage": usage}) == Usage(100, 5, cache_read_tokens=64)


def test_llama_cpp_timings_give_the_cache_where_usage_lacks_it() -> None:
    data = {"usage": {"prompt_tokens": 38, "completion_tokens": 4}, "timings": {"cache_n": 37}}
    assert openai_usage(data) == Usage(38, 4, cache_read_tokens=37)


def test_responses_usage_keeps_cached_written_and_reasoning_tokens() -> None:
    usage = {
        "input_tokens": 256,
        "input_tokens_details": {"cached_tokens": 255, "cache_write_tokens": 1},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 259,
    }
    assert responses_usage(usage) == Usage(256, 3, 255, 1, reasoning_tokens=2)


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


def test_reasoning_counted_beside_the_completion_is_added_to_it() -> None:
    # xAI's example: its total_tokens is prompt + completion + reasoning.
    details = {"reasoning_tokens": 94}
    usage = {
        "prompt_tokens": 32,
        "completion_tokens": 9,
        "total_tokens": 135,
        "completion_tokens_details": details,
    }
    assert openai_usage({"usage": usage}) == Usage(32, 103, reasoning_tokens=94)
    # A thinking-only answer from a proxy of Gemini, said the same way.
    responses = {
        "input_tokens": 21,
        "output_tokens": 0,
        "total_tokens": 81,
        "output_tokens_details": {"reasoning_tokens": 60},
    }
    assert responses_usage(responses) == Usage(21, 60, reasoning_tokens=60)


def test_reasoning_larger_than_its_completion_is_not_believed() -> None:
    # Without a total that says the reasoning is counted apart, the count is inconsistent.
    details = {"reasoning_tokens": 60}
    usage = {"prompt_tokens": 21, "completion_tokens": 5, "completion_tokens_details": details}
    assert openai_usage({"usage": usage}) is None
    responses = {
        "input_tokens": 21,
        "output_tokens": 5,
        "total_tokens": 26,
        "output_tokens_details": details,
    }
    assert responses_usage(responses) is None


def test_an_unbelievable_reasoning_count_makes_the_whole_usage_ignored() -> None:
    details = {"reasoning_tokens": -1}
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "completion_tokens_details": details}
    assert openai_usage({"usage": usage}) is None
    responses = {"input_tokens": 5, "output_tokens": 2, "output_tokens_details": details}
    assert responses_usage(responses) is None


def test_a_usage_key_spelled_with_a_json_escape_is_still_found() -> None:
    chunk = '{"id":"x","choices":[],"\\u0075sage":{"prompt_tokens":5,"completion_tokens":2}}'
    assert json.loads(chunk)["usage"]["prompt_tokens"] == 5
    assert reported_usage(chunk) == Usage(5, 2)


def test_an_escaped_negative_usage_refunds_nothing() -> None:
    chunk = '{"choices":[],"\\u0075sage":{"prompt_tokens":-1000005,"completion_tokens":0}}'
    assert reported_usage(chunk) is None
