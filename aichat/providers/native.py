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
  ``response.completed``, ``response.incomplete``); a failure event (``error``,
  ``response.failed``) ends it as a failure, carrying the upstream's own event for a client
  of that API, and is retried like an HTTP error when nothing has been sent yet.
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
from aichat.providers.base import Event, Finish, RawBody, RawEvents, Usage
from aichat.providers.http import UpstreamBounds, upstream_body
from aichat.providers.streaming import EventSplitter, sse_events

# A ``"model": "..."`` pair; quotes inside JSON strings are escaped, so this cannot match
# text inside one.
MODEL_PAIR = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def with_model(raw: bytes, body: Mapping[str, Any], model: str) -> bytes:
    """``raw`` (the JSON ``body``) with its top-level model replaced by ``model``, every other
    byte as sent; re-written whole only when the model's place in the bytes is ambiguous."""
    pairs = MODEL_PAIR.findall(raw)
    if len(pairs) == 1:
        try:
            value = json.loads(b"{" + pairs[0] + b"}")["model"]
        except ValueError:
            value = None
        if value == body.get("model"):
            return raw.replace(pairs[0], b'"model":' + orjson.dumps(model), 1)
    return orjson.dumps({**body, "model": model})


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


def _object(payload: bytes, api: Api) -> dict[str, Any]:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError(f"Upstream sent a {api} event that is not a JSON object.")
    return value


def _typed(payload: bytes, api: Api) -> bytes:
    """The ``type`` of an event without an ``event:`` line (some servers write none)."""
    kind = _object(payload, api).get("type")
    return kind.encode() if isinstance(kind, str) else b""


@dataclass(slots=True)
class _Stream:
    """What one answer's events have said so far."""

    usage: Usage | None = None
    ended: bool = False


def _read(dialect: Dialect, data: bytes, state: _Stream) -> int:
    """Read ``data`` (complete events) for usage and its end; the number of events in it.

    A failure event raises, its own bytes kept on the error for a client of this API.
    """
    blocks = data.split(b"\n\n")
    blocks.pop()  # what follows the last blank line: nothing
    for block in blocks:
        name = _name(block)
        if not name or name in dialect.usage or name in dialect.fails:
            fields = sse_events(block + b"\n\n")
            if not fields:
                continue
            payload = fields[0][1]
            name = name or _typed(payload, dialect.api)
            if name in dialect.fails:
                err = dialect.failure(_object(payload, dialect.api))
                err.verbatim, err.verbatim_api = block + b"\n\n", dialect.api
                raise err
            reader = dialect.usage.get(name)
            if reader is not None:
                state.usage = reader(_object(payload, dialect.api), state.usage)
        if name in dialect.ends:
            state.ended = True
    return len(blocks)


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
            count = _read(dialect, data, state)
        except UpstreamError as err:
            before = data[: data.find(err.verbatim or b"")] if err.verbatim else b""
            if before:
                yield RawEvents(dialect.api, before, before.count(b"\n\n"), usage=state.usage)
            raise
        yield RawEvents(dialect.api, data, count, last=state.ended, usage=state.usage)
        if state.ended:
            yield Finish()
            return


async def whole_body(dialect: Dialect, body: AsyncIterator[bytes]) -> AsyncGenerator[Event, None]:
    """A whole answer as ``RawBody`` with the usage it reports, then ``Finish``."""
    data = b"".join([chunk async for chunk in body])
    answer = _object(data, dialect.api)
    if "error" in answer and answer.get("type") == "error":
        raise dialect.failure(answer)
    yield RawBody(dialect.api, data, dialect.whole_usage(answer))
    yield Finish()


async def native_answer(
    dialect: Dialect,
    session: aiohttp.ClientSession,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    bounds: UpstreamBounds,
    name: str,
    stream: bool,
    shaped: Callable[[UpstreamError], UpstreamError],
) -> AsyncGenerator[Event, None]:
    """POST ``body`` to ``url`` and yield the answer's events; HTTP errors through ``shaped``."""
    upstream = upstream_body(
        session, url, body=body, headers=headers, bounds=bounds, name=name, whole=not stream
    )
    try:
        async with aclosing(upstream):
            events = (
                stream_events(dialect, upstream, bounds.max_line)
                if stream
                else whole_body(dialect, upstream)
            )
            async with aclosing(events) as answer:
                async for event in answer:
                    yield event
    except UpstreamError as err:
        raise shaped(err) from None


def prompt_body(prompt: Prompt, api: Api, model: str, translate: Callable[[], bytes]) -> bytes:
    """What goes upstream: the client's bytes when it speaks ``api``, else ``translate()``."""
    if prompt.api == api:
        return with_model(prompt.raw, prompt.body, model)
    return translate()
