"""Each server's way of saying "the prompt does not fit", recognised with the counts it gave."""

from __future__ import annotations

from typing import Any

import pytest

from aichat.core.errors import ContextOverflow
from aichat.providers.overflow import MAX_TEXT, Overflow, context_overflow

OPENAI = {
    "message": "This model's maximum context length is 128000 tokens. However, your messages "
    "resulted in 130512 tokens. Please reduce the length of the messages.",
    "type": "invalid_request_error",
    "param": "messages",
    "code": "context_length_exceeded",
}
RESPONSES = {
    "code": "context_length_exceeded",
    "message": "Your input exceeds the context window of this model. Please adjust your input "
    "and try again.",
}
ANTHROPIC = {
    "type": "invalid_request_error",
    "message": "prompt is too long: 208310 tokens > 200000 maximum",
}
LLAMACPP = {
    "code": 400,
    "type": "exceed_context_size_error",
    "message": "request (4200 tokens) exceeds the available context size (4096 tokens), try "
    "increasing it",
    "n_prompt_tokens": 4200,
    "n_ctx": 4096,
}
VLLM = {
    "object": "error",
    "type": "BadRequestError",
    "code": 400,
    "message": "This model's maximum context length is 2048 tokens. However, you requested "
    "2100 tokens (1900 in the messages, 200 in the completion). Please reduce the length of "
    "the messages or completion.",
}
VLLM_NEWER = {
    "type": "BadRequestError",
    "message": "This model's maximum context length is 2048 tokens. However, you requested 16 "
    "output tokens and your prompt contains at least 2049 input tokens, for a total of at "
    "least 2065 tokens. Please reduce the length of the input prompt or the number of "
    "requested output tokens.",
}
OLLAMA = {"message": "the input length exceeds the context length"}


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        (OPENAI, Overflow(130512, 128000)),
        (RESPONSES, Overflow()),
        (ANTHROPIC, Overflow(208310, 200000)),
        (LLAMACPP, Overflow(4200, 4096)),
        (VLLM, Overflow(1900, 2048)),
        (VLLM_NEWER, Overflow(2049, 2048)),
        (OLLAMA, Overflow()),
    ],
    ids=["openai", "responses", "anthropic", "llamacpp", "vllm", "vllm-newer", "ollama"],
)
def test_every_server_s_overflow_is_recognised_with_its_counts(
    details: dict[str, Any], expected: Overflow
) -> None:
    assert context_overflow(details) == expected


@pytest.mark.parametrize(
    "details",
    [
        {"type": "invalid_request_error", "message": "max_tokens: must be at most 8192"},
        {"type": "overloaded_error", "message": "Overloaded"},
        {"code": "rate_limit_exceeded", "message": "Rate limit reached"},
        {"message": 42},
        {},
    ],
)
def test_other_errors_are_not_overflows(details: dict[str, Any]) -> None:
    assert context_overflow(details) is None


def test_counts_past_nine_digits_or_of_the_wrong_type_are_left_out() -> None:
    huge = {**LLAMACPP, "n_prompt_tokens": 10**12, "n_ctx": True}
    assert context_overflow(huge) == Overflow()
    message = "prompt is too long: 99999999999 tokens > 200000 maximum"
    assert context_overflow({"message": message}) == Overflow()


def test_only_the_start_of_a_long_message_is_read() -> None:
    late = {"message": "x" * MAX_TEXT + "prompt is too long: 5 tokens > 4 maximum"}
    assert context_overflow(late) is None


def test_each_api_is_told_in_its_own_words() -> None:
    both = ContextOverflow(130512, 128000)
    assert (both.status, both.type, both.code) == (400, "invalid_request_error", both.code)
    assert both.code == "context_length_exceeded" and not both.retryable
    assert both.message == (
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130512 tokens. Please reduce the length of the messages."
    )
    assert both.prompt_too_long() == "prompt is too long: 130512 tokens > 128000 maximum"
    unknown = ContextOverflow(None, None)
    assert unknown.message.startswith("Your input exceeds the context window of this model.")
    assert unknown.prompt_too_long() == "prompt is too long"
