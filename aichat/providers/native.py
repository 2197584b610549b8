"""What the two upstream APIs with named events share: Anthropic Messages and OpenAI
Responses, spoken natively (``aichat.providers.anthropic``, ``aichat.providers.responses``).

Decisions:

- A request in the upstream's own API goes as the client sent it: its bytes, with only the
  model's value rewritten in place (``with_model``). Any other request is translated from its
  Chat Completions form, by the dialect's own request writer.
- The answer is read as whole events (``EventSplitter``) and handed on as ``RawEvents``,
  undecoded: a client of the same API gets the upstream's bytes. Only the few events that
  carry usage, end the answer or report a failure are parsed, by their ``event:`` name;
  every other event costs a look at its first line.
- The answer is complete at the dialect's final event (``message_stop``,
  ``response.completed``, ``response.incomplete``), and ends there: whatever an upstream
  sends after it, in the same read or later, is never read or handed on. A failure event
  (``error``, ``response.failed``) ends it as a failure, carrying the upstream's own event
  for a client of that API, and is retried like an HTTP error when nothing has been sent
  yet.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from aichat.core.errors import UpstreamError
from aichat.core.prompt import Api, Prompt
from aichat.core.schemas import ChatCompletionRequest
from aichat.providers.base import Event, Finish, RawBody, RawEvents, Usage
from aichat.providers.errors import json_object, upstream_error
from aichat.providers.http import UpstreamBounds, upstream_body
from aichat.providers.streaming import EventSplitter, sse_events

# A ``"model": "..."`` pair; quotes inside JSON strings are escaped, so this cannot match
# text inside one.
MODEL_PAIR = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def _model_pairs(raw: bytes) -> list[bytes]:
    """Every ``"model": "..."`` pair in ``raw``.

    Where ``"model"`` occurs once in all, as in most requests, two substring searches and
    one match find it: a regular expression's pass over a coding agent's 40-50 KB body
    costs five times as much (callgrind).
    """
    at = raw.find(b'"model"')
    if at >= 0 and raw.find(b'"model"', at + 1) < 0:
        match = MODEL_PAIR.match(raw, at)
        return [match.group(0)] if match else []
    return MODEL_PAIR.findall(raw)


def with_model(raw: bytes, body: Mapping[str, Any], model: str) -> bytes:
    """``raw`` (the JSON ``body``) with its top-level model replaced by ``model``, every other
    byte as sent; re-written whole only when the model's place in the bytes is ambiguous."""
    pairs = _model_pairs(raw)
    if len(pairs) == 1:
        try:
            value = json.loads(b"{" + pairs[0] + b"}")["model"]
        except ValueError:
            value = None
        if value == body.get("model"):
            return raw.replace(pairs[0], b'"model":' + orjson.dumps(model), 1)
    return orjson.dumps({**body, "model": model})


# A request in another API, and the fields of the original it could not carry.
Translation = tuple[dict[str, Any], list[str]]
Reader = Callable[[dict[str, Any], Usage | None], Usage | None]
Failure = Callable[[dict[str, Any]], UpstreamError]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one API's answer events say what the gateway must know.

    ``usage`` maps the names of events that carry usage to a reader of it (given the event
    and the usage so far); ``ends`` names the events that complete an answer; ``fails``
    the events that end it as a failure, and ``failure`` makes the error of one.
    """

    api: Api
    usage: Mapping[bytes, Reader]
    ends: frozenset[bytes]
    fails: frozenset[bytes]
    failure: Failure
    whole_usage: Callable[[dict[str, Any]], Usage | None]


def _name(event: bytes) -> bytes:
    """The ``event:`` name of one event's bytes (b"" if it has none)."""
    if event.startswith(b"event:"):
        return event[6 : event.find(b"\n")].strip()
    return b""


def _typed(payload: bytes, api: Api) -> bytes:
    """The ``type`` of an event without an ``event:`` line (some servers write none)."""
    kind = json_object(payload, f"a {api} answer").get("type")
    return kind.encode() if isinstance(kind, str) else b""


@dataclass(slots=True)
class _Stream:
    """What one answer's events have said so far."""

    usage: Usage | None = None
    ended: bool = False


def _read(dialect: Dialect, data: bytes, state: _Stream) -> tuple[int, int]:
    """Read ``data`` (complete events) for usage and its end: the number of the answer's
    events in it and their length. The answer ends at its final event: what follows in the
    same read is not part of it, and is neither read nor handed on.

    A failure event raises, its own bytes kept on the error for a client of this API.
    """
    blocks = data.split(b"\n\n")
    blocks.pop()  # what follows the last blank line: nothing
    size = 0
    for count, block in enumerate(blocks, 1):
        size += len(block) + 2
        name = _name(block)
        if not name or name in dialect.usage or name in dialect.fails:
            fields = sse_events(block + b"\n\n")
            if not fields:
                continue
            payload = fields[0][1]
            name = name or _typed(payload, dialect.api)
            if name in dialect.fails:
                err = dialect.failure(json_object(payload, f"a {dialect.api} answer"))
                err.verbatim, err.verbatim_api = block + b"\n\n", dialect.api
                raise err
            reader = dialect.usage.get(name)
            if reader is not None:
                state.usage = reader(json_object(payload, f"a {dialect.api} answer"), state.usage)
        if name in dialect.ends:
            state.ended = True
            return count, size
    return len(blocks), size


async def stream_events(
    dialect: Dialect, body: AsyncIterator[bytes], max_event: int
) -> AsyncGenerator[Event, None]:
    """The answer's events as ``RawEvents``, then ``Finish`` once its final event came.

    A read that holds events before a failure event hands those on first.
    """
    splitter = EventSplitter(max_event)
    state = _Stream()
    async for chunk in body:
        data = splitter.feed(chunk)
        if not data:
            continue
        try:
            count, size = _read(dialect, data, state)
        except UpstreamError as err:
            before = data[: data.find(err.verbatim or b"")] if err.verbatim else b""
            if before:
                yield RawEvents(dialect.api, before, before.count(b"\n\n"), usage=state.usage)
            raise
        yield RawEvents(dialect.api, data[:size], count, last=state.ended, usage=state.usage)
        if state.ended:
            yield Finish()
            return


async def whole_body(dialect: Dialect, body: AsyncIterator[bytes]) -> AsyncGenerator[Event, None]:
    """A whole answer as ``RawBody`` with the usage it reports, then ``Finish``."""
    data = b"".join([chunk async for chunk in body])
    answer = json_object(data, f"a {dialect.api} answer")
    if "error" in answer and answer.get("type") == "error":
        raise dialect.failure(answer)
    yield RawBody(dialect.api, data, dialect.whole_usage(answer))
    yield Finish()


class NativeProvider:
    """Base of the providers whose upstream speaks Messages or Responses: a request in that
    API goes as sent (``with_model``), any other is translated from its Chat Completions form
    (``translate``); the answer comes back as the dialect's raw events."""

    name: str
    api: Api
    dialect: Dialect

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        bounds: UpstreamBounds,
        headers: dict[bool, dict[str, str]],
    ) -> None:
        self._session = session
        self._url = url
        self._bounds = bounds
        self._headers = headers

    def translate(
        self, chat: ChatCompletionRequest, model: str
    ) -> tuple[dict[str, Any], list[str]]:
        """The request in this API for a Chat Completions request, and what it left out."""
        raise NotImplementedError

    def headers(self, prompt: Prompt) -> dict[str, str]:
        """The headers ``prompt`` is sent with."""
        return self._headers[prompt.stream]

    def stream(self, prompt: Prompt, upstream_model: str) -> AsyncGenerator[Event, None]:
        """The upstream's answer: ``RawEvents`` (or a ``RawBody``), then ``Finish``."""
        if prompt.api == self.api:
            body = with_model(prompt.raw, prompt.body, upstream_model)
        else:
            translated, dropped = self.translate(prompt.chat(), upstream_model)
            prompt.translated(self.api, dropped)
            body = orjson.dumps(translated)
        return self._answer(body, self.headers(prompt), prompt.stream)

    async def _answer(
        self, body: bytes, headers: dict[str, str], stream: bool
    ) -> AsyncGenerator[Event, None]:
        bounds = self._bounds
        upstream = upstream_body(
            self._session,
            self._url,
            body=body,
            headers=headers,
            bounds=bounds,
            name=self.name,
            whole=not stream,
        )
        try:
            async with aclosing(upstream):
                events = (
                    stream_events(self.dialect, upstream, bounds.max_line)
                    if stream
                    else whole_body(self.dialect, upstream)
                )
                async with aclosing(events) as answer:
                    async for event in answer:
                        yield event
        except UpstreamError as err:
            raise upstream_error(err, self.name) from None
