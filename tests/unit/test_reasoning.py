"""Reasoning kept apart from the answer: the ``<think>`` splitter, blocks and ``strip``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from aichat.answer.blocks import BlockDelta, BlockStart, BlockStop, End, segment
from aichat.core.prompt import Prompt
from aichat.core.schemas import parse_chat_request
from aichat.providers.base import (
    Event,
    Finish,
    RawChunks,
    RawCompletion,
    ReasoningDelta,
    TextDelta,
    Usage,
)
from aichat.providers.reasoning import (
    MAX_LEAD,
    UNCLOSED_UP_TO,
    StrippedReasoning,
    ThinkSplitter,
)


def _split(pieces: list[str]) -> tuple[str, str]:
    """(reasoning, answer) of an answer streamed as ``pieces``."""
    splitter = ThinkSplitter()
    out = [piece for text in pieces for piece in splitter.feed(text)] + splitter.flush()
    return "".join(t for r, t in out if r), "".join(t for r, t in out if not r)


def _cuts(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


@given(st.text(max_size=30), st.text(max_size=30), st.lists(st.integers(0, 80), max_size=8))
@example("plan <b>", "Answer", [1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 22, 23])
def test_a_leading_think_section_is_reasoning_however_the_stream_is_cut(
    thought: str, answer: str, cuts: list[int]
) -> None:
    thought = thought.replace("</think>", "")
    answer = answer.lstrip()
    text = f"\n<think>{thought}</think>\n\n{answer}"
    assert _split(_cuts(text, cuts)) == (thought, answer)


@given(st.text(max_size=40), st.lists(st.integers(0, 40), max_size=6))
def test_text_that_does_not_open_with_think_is_all_answer(text: str, cuts: list[int]) -> None:
    if text.lstrip().startswith("<think>"):
        return
    assert _split(_cuts(text, cuts)) == ("", text)


def test_think_later_in_the_text_is_answer_text() -> None:
    assert _split(["Use ", "<think>tags</think>", " like this"]) == (
        "",
        "Use <think>tags</think> like this",
    )


def test_an_unclosed_think_section_reaches_the_client_as_text_too() -> None:
    # A model writing about the tag, or misusing it: its answer was all reasoning, and
    # nothing at all with reasoning = "strip".
    assert _split(["<think>", " is a tag", "</thi"]) == (
        " is a tag</thi",
        "<think> is a tag</thi",
    )


def test_a_long_unclosed_think_section_is_reasoning_cut_short() -> None:
    long = "x" * (UNCLOSED_UP_TO + 1)
    assert _split(["<think>", long]) == (long, "")


def test_whitespace_past_the_bound_is_answer_text() -> None:
    blank = [" "] * (MAX_LEAD + 1)
    assert _split([*blank, "<think>a</think>b"]) == ("", "".join(blank) + "<think>a</think>b")


def test_the_splitter_holds_back_no_more_than_a_tag() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<think>" + "x" * 1000 + "</th") == [(True, "x" * 1000)]
    assert splitter.feed("ink>done") == [(False, "done")]


def _request() -> Prompt:
    chat = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    return Prompt.of_chat(chat, b"")


async def _events(*events: Event) -> AsyncIterator[Event]:
    for event in events:
        yield event


async def test_reasoning_gets_blocks_of_its_own_before_the_answer() -> None:
    chunk = json.dumps({"choices": [{"index": 0, "delta": {"reasoning_content": "b"}}]})
    stream = _events(RawChunks((chunk,)), TextDelta("Hi"), Usage(1, 2), Finish())
    got = [e async for found in segment(ReasoningDelta("a"), stream, _request()) for e in found]
    assert got == [
        BlockStart(0, None, reasoning=True),
        BlockDelta(0, "a"),
        BlockDelta(0, "b"),
        BlockStop(0, None, "ab", reasoning=True),
        BlockStart(1, None),
        BlockDelta(1, "Hi"),
        BlockStop(1, None, "Hi"),
        End("stop", Usage(1, 2)),
    ]


async def test_think_tags_become_reasoning_blocks_or_nothing() -> None:
    for reasoning, expected in ((True, ["plan", "Answer"]), (False, ["Answer"])):
        stream = _events(TextDelta("an</think>\n"), TextDelta("Answer"), Finish())
        got = [
            e
            async for found in segment(TextDelta("<think>pl"), stream, _request(), reasoning)
            for e in found
        ]
        assert [e.text for e in got if isinstance(e, BlockStop)] == expected


async def test_reasoning_counts_as_completion_tokens_when_the_upstream_reports_none() -> None:
    without = [
        e async for found in segment(TextDelta("Hi"), _events(Finish()), _request()) for e in found
    ]
    stream = _events(TextDelta("Hi"), Finish())
    counted = [
        e
        async for found in segment(ReasoningDelta("long " * 50), stream, _request())
        for e in found
    ]
    assert isinstance(without[-1], End)
    assert isinstance(counted[-1], End)
    assert counted[-1].usage.completion_tokens > without[-1].usage.completion_tokens


class _Upstream:
    name = "fake"
    api = "chat"

    def __init__(self, *events: Event) -> None:
        self._events = events

    async def stream(self, prompt: Prompt, upstream_model: str) -> Any:
        for event in self._events:
            yield event


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps(
        {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )


async def test_strip_removes_reasoning_fields_and_think_sections_from_chunks() -> None:
    role = _chunk({"role": "assistant", "content": ""})
    upstream = _Upstream(
        RawChunks((role, _chunk({"reasoning_content": "hmm"}), _chunk({"content": "<think>x"}))),
        RawChunks((_chunk({"content": "y</think>\n\nHel"}), _chunk({"content": "lo"}))),
        RawChunks((_chunk({}, "stop"),), last=True),
        Finish(),
    )
    provider = StrippedReasoning(upstream)
    out = [e async for e in provider.stream(_request(), "m")]
    jsons = [text for e in out if isinstance(e, RawChunks) for text in e.jsons]
    assert jsons[0] == role  # untouched chunks are forwarded as they came
    deltas = [json.loads(text)["choices"][0]["delta"] for text in jsons]
    assert "".join(d.get("content", "") for d in deltas) == "Hello"
    assert not any("reasoning_content" in d for d in deltas)
    assert isinstance(out[-2], RawChunks)
    assert out[-2].last
    assert out[-1] == Finish()


async def test_strip_cleans_whole_completions_text_and_reasoning_events() -> None:
    message = {"role": "assistant", "content": "<think>a</think>B", "reasoning": "r"}
    whole = json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
    provider = StrippedReasoning(_Upstream(RawCompletion(whole), Finish()))
    (completion, _) = [e async for e in provider.stream(_request(), "m")]
    assert isinstance(completion, RawCompletion)
    assert json.loads(completion.json)["choices"][0]["message"] == {
        "role": "assistant",
        "content": "B",
    }
    provider = StrippedReasoning(
        _Upstream(ReasoningDelta("r"), TextDelta("<think>a</think>"), TextDelta("B"), Finish())
    )
    assert [e async for e in provider.stream(_request(), "m")] == [TextDelta("B"), Finish()]
