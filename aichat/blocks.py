"""Neutral provider events -> content blocks, for inbound APIs built on blocks.

The Responses API (output items) and the Anthropic Messages API (content blocks) both shape
an answer as a list of blocks, each a text or a tool call, opened, filled piece by piece and
closed. ``segment`` turns any provider's events into that sequence once, so each API module
only has to spell the block events in its own wire format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from aichat.ids import new_id
from aichat.openai_events import neutral_events
from aichat.providers.base import Event, Finish, TextDelta, ToolCallDelta, Usage
from aichat.schemas import ChatCompletionRequest
from aichat.translate import Incomplete, counted_usage


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call's identity, known when its block opens; ``arguments`` when it closes."""

    id: str
    name: str
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class BlockStart:
    """Block ``index`` opens: a text block when ``tool`` is None, else a tool call."""

    index: int
    tool: ToolCall | None


@dataclass(frozen=True, slots=True)
class BlockDelta:
    """More of block ``index``: answer text, or a piece of a tool call's JSON arguments."""

    index: int
    text: str


@dataclass(frozen=True, slots=True)
class BlockStop:
    """Block ``index`` is complete: ``text`` is all of it (the arguments, for a tool call)."""

    index: int
    tool: ToolCall | None
    text: str


@dataclass(frozen=True, slots=True)
class End:
    """The answer is complete: OpenAI's finish reason and usage (counted when not reported)."""

    reason: str
    usage: Usage


BlockEvent = BlockStart | BlockDelta | BlockStop | End


def new_call_id() -> str:
    """An id for a tool call whose upstream did not name it."""
    return new_id("call_")


class _Open:
    """The block being filled: its index, what it is and what it holds so far."""

    __slots__ = ("call_index", "index", "parts", "tool")

    def __init__(self, index: int, tool: ToolCall | None, call_index: int | None) -> None:
        self.index = index
        self.tool = tool
        self.call_index = call_index
        self.parts: list[str] = []

    def stop(self) -> BlockStop:
        text = "".join(self.parts)
        tool = ToolCall(self.tool.id, self.tool.name, text) if self.tool else None
        return BlockStop(self.index, tool, text)


async def segment(
    first: Event, events: AsyncIterator[Event], request: ChatCompletionRequest
) -> AsyncIterator[BlockEvent]:
    """Block events of one answer; raises ``Incomplete`` if it ends without ``Finish``.

    Tool calls are expected one after another (as OpenAI streams them): a piece for another
    call index closes the current block and opens the next.
    """
    block: _Open | None = None
    count = 0
    produced: list[str] = []
    usage: Usage | None = None
    # Closed here when the answer ends at ``Finish``, not left to the garbage collector.
    async with aclosing(neutral_events(first, events)) as neutral:
        async for event in neutral:
            if isinstance(event, TextDelta | ToolCallDelta):
                text = event.text if isinstance(event, TextDelta) else event.arguments
                call = event.index if isinstance(event, ToolCallDelta) else None
                if block is None or block.call_index != call:
                    if block is not None:
                        yield block.stop()
                    tool = None
                    if isinstance(event, ToolCallDelta):
                        tool = ToolCall(event.id or new_call_id(), event.name or "")
                    block = _Open(count, tool, call)
                    count += 1
                    yield BlockStart(block.index, tool)
                if text:
                    block.parts.append(text)
                    produced.append(text)
                    yield BlockDelta(block.index, text)
            elif isinstance(event, Usage):
                usage = event
            elif isinstance(event, Finish):
                if block is not None:
                    yield block.stop()
                yield End(event.reason, usage or counted_usage(request, "".join(produced)))
                return
    raise Incomplete()


async def collect(blocks: AsyncIterator[BlockEvent]) -> tuple[list[BlockStop], End]:
    """Every completed block of an answer and its end, for APIs that answer whole."""
    stops: list[BlockStop] = []
    end: End | None = None
    # To the last block: ``segment`` ends right after ``End``, and one left suspended would
    # be closed by the garbage collector instead of here.
    async for block in blocks:
        if isinstance(block, BlockStop):
            stops.append(block)
        elif isinstance(block, End):
            end = block
    if end is None:
        raise Incomplete()  # ``segment`` raises first; this keeps the contract local
    return stops, end
