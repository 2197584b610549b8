"""A model's reasoning, kept apart from its answer.

Upstreams that think send it one of two ways: OpenAI-compatible servers (vLLM, llama.cpp,
Ollama, DeepSeek-style) in a ``reasoning_content`` or ``reasoning`` field of the delta, and
some models as a ``<think>...</think>`` section at the very start of the text. What this
module decides:

- Only a section that opens the answer counts as reasoning: ``<think>`` later in the text is
  answer text (a model explaining the tag, say), so nothing else is ever held back. Nor is
  whitespace past ``MAX_LEAD`` characters: an answer that has not opened with the tag by
  then is text.
- A section that never closes was answer text after all (a model writing about the tag, or
  misusing it): its text, kept up to ``UNCLOSED_UP_TO`` characters, reaches the client as
  answer text at the end, after it went out as reasoning. A longer one is reasoning cut short.
- Every piece is looked at once, and only the tail a tag could start in is held: time is
  linear in the answer, whatever its pieces (a whitespace-only answer included).
- An upstream's own fields are read by ``openai_events``; ``ThinkSplitter`` finds the tags.
  The inbound APIs that have a place for reasoning (Responses' ``reasoning`` items,
  Anthropic's ``thinking`` blocks) get it there; Chat Completions gets it as the upstream
  sent it.
- ``reasoning = "strip"`` on a model removes it for every inbound API before anything else
  sees the answer (``StrippedReasoning``): the reasoning fields from OpenAI chunks, the
  ``<think>`` section from the text. That costs a JSON parse per chunk, which only models
  that turn it on pay. A Responses or Messages upstream's answer is taken apart into neutral
  events first: its reasoning items and thinking blocks have no other way out.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import orjson

from aichat.core.prompt import Prompt
from aichat.providers.base import (
    Event,
    Finish,
    RawChunks,
    RawCompletion,
    ReasoningDelta,
    TextDelta,
    Wrapper,
)
from aichat.providers.markers import held_back
from aichat.providers.neutral import neutral_events

OPEN, CLOSE = "<think>", "</think>"

# Delta and message fields in which OpenAI-compatible servers send reasoning.
REASONING_FIELDS = ("reasoning_content", "reasoning", "reasoning_details")

Piece = tuple[bool, str]  # (is reasoning, text)

MAX_LEAD = 1024  # whitespace held before ``<think>`` at most
UNCLOSED_UP_TO = 64 * 1024  # characters of a section kept in case it never closes


class ThinkSplitter:
    """Splits an answer's text, streamed in pieces, into a leading ``<think>`` section and
    the answer; ``feed`` what arrives, ``flush`` at the end.

    Holds back at most the length of a tag (and ``MAX_LEAD`` characters of whitespace before
    it) while it does not know whether the answer opens with one, and a partial ``</think>``
    inside it; keeps the section's text until it closes, up to ``UNCLOSED_UP_TO``.
    """

    __slots__ = ("_held", "_kept", "_section", "_state")

    def __init__(self) -> None:
        self._held = ""
        self._state = "start"  # start -> think -> after -> text, or start -> text
        self._section: list[str] | None = []  # the section's text; None past the bound
        self._kept = 0

    def feed(self, piece: str) -> list[Piece]:
        """The reasoning and answer text that ``piece`` completes, in order."""
        if self._state == "text":
            return [(False, piece)] if piece else []
        text = self._held + piece
        self._held = ""
        if self._state == "start":
            opening = text.lstrip()
            if len(opening) < len(OPEN) and OPEN.startswith(opening) and len(text) <= MAX_LEAD:
                self._held = text  # whitespace, or what may still become ``<think>``
                return []
            if not opening.startswith(OPEN):
                self._state = "text"
                return [(False, text)]
            self._state = "think"
            text = opening[len(OPEN) :]
        if self._state == "think":
            end = text.find(CLOSE)
            if end < 0:
                keep = held_back(text, CLOSE)
                self._held = text[len(text) - keep :] if keep else ""
                reasoning = text[: len(text) - keep]
                self._keep(reasoning)
                return [(True, reasoning)] if reasoning else []
            self._state = "after"
            self._section = None
            reasoning, text = text[:end], text[end + len(CLOSE) :]
            return ([(True, reasoning)] if reasoning else []) + self.feed(text)
        answer = text.lstrip()  # "after": the blank lines that follow ``</think>``
        if answer:
            self._state = "text"
            return [(False, answer)]
        return []

    def _keep(self, reasoning: str) -> None:
        if self._section is not None:
            self._kept += len(reasoning)
            if self._kept > UNCLOSED_UP_TO:
                self._section = None
            else:
                self._section.append(reasoning)

    def flush(self) -> list[Piece]:
        """What is still held once the answer has ended; the text of a section that never
        closed, as answer text."""
        held, self._held = self._held, ""
        if self._state == "think" and self._section is not None:
            rest: list[Piece] = [(True, held)] if held else []
            return [*rest, (False, OPEN + "".join(self._section) + held)]
        if not held or self._state == "after":
            return []
        return [(self._state == "think", held)]


def answer_text(pieces: list[Piece]) -> str:
    """The answer part of ``pieces``."""
    return "".join(text for reasoning, text in pieces if not reasoning)


class _ChunkStripper:
    """Removes reasoning from OpenAI chunks or a whole completion, choice by choice."""

    __slots__ = ("_splitters",)

    def __init__(self) -> None:
        self._splitters: dict[Any, ThinkSplitter] = {}

    def _strip(self, choice: dict[str, Any], part: str, last: bool) -> bool:
        """Strip ``choice[part]`` in place; whether anything was removed from it."""
        message = choice.get(part)
        if not isinstance(message, dict):
            return False
        removed = any([message.pop(key, None) is not None for key in REASONING_FIELDS])
        content = message.get("content")
        if isinstance(content, str) or last:
            splitter = self._splitters.setdefault(choice.get("index"), ThinkSplitter())
            pieces = splitter.feed(content) if isinstance(content, str) else []
            if last:
                pieces += splitter.flush()
            text = answer_text(pieces)
            removed = removed or text != (content or "")
            if text or isinstance(content, str):
                message["content"] = text
        return removed

    def chunk(self, json_text: str) -> str | None:
        """A ``chat.completion.chunk`` without reasoning; None if it held nothing else."""
        data = self._stripped(json_text, "delta", whole=False)
        if data is None:
            return json_text
        choices = data["choices"]
        if not data.get("usage") and all(_empty(choice) for choice in choices):
            return None
        return orjson.dumps(data).decode()

    def completion(self, json_text: str) -> str:
        """A whole ``chat.completion`` without reasoning."""
        data = self._stripped(json_text, "message", whole=True)
        return json_text if data is None else orjson.dumps(data).decode()

    def _stripped(self, json_text: str, part: str, whole: bool) -> dict[str, Any] | None:
        """The parsed object with reasoning removed; None when there was none to remove (or
        it is not an answer this can read: it reaches the client as it came)."""
        try:
            data = orjson.loads(json_text)
        except orjson.JSONDecodeError:
            return None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list):
            return None
        removed = False
        for choice in choices:
            if isinstance(choice, dict):
                last = whole or choice.get("finish_reason") is not None
                removed = self._strip(choice, part, last) or removed
        return data if removed else None


def _empty(choice: Any) -> bool:
    if not isinstance(choice, dict) or choice.get("finish_reason") is not None:
        return False
    delta = choice.get("delta")
    return not delta or delta == {"content": ""}


class StrippedReasoning(Wrapper):
    """Wraps a provider so that no reasoning of its model reaches any client."""

    async def stream(self, prompt: Prompt, upstream_model: str) -> AsyncGenerator[Event, None]:
        """The inner provider's events without reasoning fields, events or sections."""
        splitter = ThinkSplitter()
        chunks = _ChunkStripper()
        inner = self._inner.stream(prompt, upstream_model)
        native = self._inner.api != "chat"
        async with (
            aclosing(inner),
            aclosing(neutral_events(inner) if native else inner) as events,
        ):
            async for event in events:
                if isinstance(event, TextDelta):
                    text = answer_text(splitter.feed(event.text))
                    if text:
                        yield TextDelta(text)
                elif isinstance(event, RawChunks):
                    stripped = [chunks.chunk(text) for text in event.jsons]
                    kept = tuple(text for text in stripped if text is not None)
                    if kept or event.last or event.usage:
                        yield RawChunks(kept, event.last, event.usage)
                elif isinstance(event, RawCompletion):
                    yield RawCompletion(chunks.completion(event.json), event.usage)
                elif isinstance(event, Finish):
                    text = answer_text(splitter.flush())
                    if text:
                        yield TextDelta(text)
                    yield event
                elif not isinstance(event, ReasoningDelta):
                    yield event
