"""Neutral provider events -> content blocks, for inbound APIs built on blocks.

The Responses API (output items) and the Anthropic Messages API (content blocks) both shape
an answer as a list of blocks, each a text, a tool call or reasoning, opened, filled piece by
piece and closed. ``segment`` turns any provider's events into that sequence once, so each API
module only has to spell the block events in its own wire format.

Memory is bounded: a block's whole text (on its ``BlockStop``) is kept only where the API
repeats it (every block for Responses, tool calls only for a Messages stream), at most
``limit`` characters of one answer in all; past it the answer fails with ``AnswerTooLarge``.
The text counted for usage, when the upstream reports none, is a ``TextTally``.

Block events come in lists, one per upstream event (one read of a stream): a stream then
writes what one read brought in one write, as the pass-through paths do, instead of one
write per event (a coding agent's answer of 20 pieces was about 28 writes). Pieces of one
block that arrived in one read are one ``BlockDelta``, as the Chat Completions path makes
them one delta: one event to encode and send instead of one per upstream chunk.
"""

from __future__ import annotations

import io
import math
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from aichat.answer.translate import counted_usage
from aichat.core.errors import UpstreamError
from aichat.core.ids import new_call_id
from aichat.core.prompt import Prompt
from aichat.core.tokens import TextTally
from aichat.providers.base import (
    Chained,
    Event,
    Finish,
    Incomplete,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from aichat.providers.neutral import Parts
from aichat.providers.reasoning import ThinkSplitter


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call's identity, known when its block opens; ``arguments`` when it closes."""

    id: str
    name: str
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class BlockStart:
    """Block ``index`` opens: a tool call when ``tool`` is set, else text or reasoning."""

    index: int
    tool: ToolCall | None
    reasoning: bool = False


@dataclass(frozen=True, slots=True)
class BlockDelta:
    """More of block ``index``: text, reasoning, or a piece of a tool call's JSON arguments."""

    index: int
    text: str


@dataclass(frozen=True, slots=True)
class BlockStop:
    """Block ``index`` is complete: ``text`` is all of it (the arguments, for a tool call)."""

    index: int
    tool: ToolCall | None
    text: str
    reasoning: bool = False


@dataclass(frozen=True, slots=True)
class End:
    """The answer is complete: OpenAI's finish reason and usage (counted when not reported)."""

    reason: str
    usage: Usage


BlockEvent = BlockStart | BlockDelta | BlockStop | End

# What a piece belongs to: the answer text, the reasoning, or the tool call of that index.
_TEXT, _REASONING = "text", "reasoning"


class AnswerTooLarge(UpstreamError):
    """An answer longer than an API that repeats it whole may keep."""

    def __init__(self, limit: float) -> None:
        super().__init__(
            f"The answer is longer than {limit:.0f} characters, the most this API keeps to "
            "repeat at its end (AICHAT_MAX_ANSWER_BYTES).",
            retryable=False,
        )


class _Open:
    """The block being filled: its index, what it is and what it holds so far (None: its
    text is not kept). A ``StringIO``, not a list of pieces: a piece is often one token,
    and a string object per token costs some fifty bytes more than its text."""

    __slots__ = ("index", "key", "parts", "tool")

    def __init__(self, index: int, key: str | int, tool: ToolCall | None, keep: bool) -> None:
        self.index = index
        self.key = key
        self.tool = tool
        self.parts = io.StringIO() if keep else None

    def start(self) -> BlockStart:
        return BlockStart(self.index, self.tool, self.key == _REASONING)

    def stop(self) -> BlockStop:
        text = self.parts.getvalue() if self.parts is not None else ""
        tool = ToolCall(self.tool.id, self.tool.name, text) if self.tool else None
        return BlockStop(self.index, tool, text, self.key == _REASONING)


class _Segmenter:
    """Opens, fills and closes blocks as the pieces of an answer arrive."""

    __slots__ = ("block", "count", "kept", "limit", "produced", "texts")

    def __init__(self, limit: float, texts: bool) -> None:
        self.block: _Open | None = None
        self.count = 0
        self.produced = TextTally()
        self.limit = limit
        self.texts = texts  # keep text and reasoning blocks' text, not only tool calls'
        self.kept = 0

    def add(self, key: str | int, text: str, call: ToolCallDelta | None = None) -> list[BlockEvent]:
        """The block events of one piece: a new block when it belongs to another one."""
        events: list[BlockEvent] = []
        block = self.block
        if block is None or block.key != key:
            if block is not None:
                events.append(block.stop())
            tool = ToolCall(call.id or new_call_id(), call.name or "") if call else None
            block = self.block = _Open(self.count, key, tool, tool is not None or self.texts)
            self.count += 1
            events.append(block.start())
        if text:
            if block.parts is not None:
                self.kept += len(text)
                if self.kept > self.limit:
                    raise AnswerTooLarge(self.limit)
                block.parts.write(text)
            self.produced.add(text)
            events.append(BlockDelta(block.index, text))
        return events

    def text(self, pieces: list[tuple[bool, str]], reasoning: bool) -> list[BlockEvent]:
        """The block events of answer and reasoning pieces; reasoning left out unless asked."""
        events: list[BlockEvent] = []
        for is_reasoning, text in pieces:
            if reasoning or not is_reasoning:
                events += self.add(_REASONING if is_reasoning else _TEXT, text)
        return events

    def close(self) -> list[BlockEvent]:
        """The stop of the last block, if one is open."""
        return [self.block.stop()] if self.block is not None else []


async def segment(
    first: Event,
    events: AsyncIterator[Event],
    prompt: Prompt,
    reasoning: bool = True,
    *,
    limit: float = math.inf,
    texts: bool = True,
) -> AsyncGenerator[list[BlockEvent], None]:
    """Block events of one answer, those of each upstream event in one list; raises
    ``Incomplete`` if it ends without ``Finish``.

    ``BlockStop`` carries the whole text of tool calls, and of text and reasoning blocks
    with ``texts``: at most ``limit`` characters in all, else ``AnswerTooLarge``.

    Tool calls are expected one after another (as OpenAI streams them): a piece for another
    call index closes the current block and opens the next. Reasoning, from the upstream's
    own fields or a leading ``<think>`` section, gets blocks of its own, or none at all
    without ``reasoning``; it is never answer text.
    """
    blocks = _Segmenter(limit, texts)
    splitter = ThinkSplitter()
    usage: Usage | None = None
    parts = Parts()
    # An iterator, not a generator: nothing is left for the garbage collector to close.
    async for upstream in Chained(first, events):
        found: list[BlockEvent] = []
        for event in parts.of(upstream):
            if isinstance(event, TextDelta):
                found += blocks.text(splitter.feed(event.text), reasoning)
            elif isinstance(event, ReasoningDelta):
                found += blocks.text([(True, event.text)], reasoning)
            elif isinstance(event, ToolCallDelta):
                found += blocks.add(event.index, event.arguments, event)
            elif isinstance(event, Usage):
                usage = event
            elif isinstance(event, Finish):
                found += blocks.text(splitter.flush(), reasoning) + blocks.close()
                counted = usage or counted_usage(prompt.texts(), blocks.produced.tokens())
                found.append(End(event.reason, counted))
                yield _merged(found)
                return
        if found:
            yield _merged(found)
    raise Incomplete()


def _merged(found: list[BlockEvent]) -> list[BlockEvent]:
    """``found`` with each run of deltas of one block made one delta."""
    if len(found) < 2:
        return found
    merged: list[BlockEvent] = []
    run: list[BlockDelta] = []  # deltas of one block in a row, not yet in ``merged``
    for block in found:
        if isinstance(block, BlockDelta) and (not run or run[0].index == block.index):
            run.append(block)
            continue
        merged += _joined(run)
        run = [block] if isinstance(block, BlockDelta) else []
        if not run:
            merged.append(block)
    return merged + _joined(run)


def _joined(run: list[BlockDelta]) -> list[BlockDelta]:
    """One delta for a run of deltas of one block."""
    if len(run) < 2:
        return run
    return [BlockDelta(run[0].index, "".join([delta.text for delta in run]))]


async def collect(blocks: AsyncIterator[list[BlockEvent]]) -> tuple[list[BlockStop], End]:
    """Every completed block of an answer and its end, for APIs that answer whole."""
    stops: list[BlockStop] = []
    end: End | None = None
    # To the last block: ``segment`` ends right after ``End``, and one left suspended would
    # be closed by the garbage collector instead of here.
    async for found in blocks:
        for block in found:
            if isinstance(block, BlockStop):
                stops.append(block)
            elif isinstance(block, End):
                end = block
    if end is None:
        raise Incomplete()  # ``segment`` raises first; this keeps the contract local
    return stops, end
