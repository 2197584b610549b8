"""An upstream's answer in the client's own API, passed on as it came: only the model renamed.

For a Responses or Messages client whose upstream speaks its API: the events, as bytes, in
the reads they arrived in; the stream ends with the upstream's final event, or, when the
upstream failed, with its own error event (``UpstreamError.verbatim``). The model the
upstream names is the one the client asked for: the first ``"model"`` pair the answer holds
is the upstream's, and every later copy of the same bytes (Responses repeats the response
object in its lifecycle events) is renamed with it. Quotes inside JSON strings are escaped,
so no answer text can be taken for it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import orjson

from aichat.answer.sse import Final
from aichat.core.errors import APIError, ContextOverflow, UpstreamError
from aichat.providers.base import Chained, Event, Finish, Incomplete, RawBody, RawEvents
from aichat.providers.native import MODEL_PAIR


class Renamer:
    """Renames the upstream's model in one answer's bytes, found once, then replaced."""

    __slots__ = ("_new", "_old")

    def __init__(self, model: str) -> None:
        self._new = b'"model":' + orjson.dumps(model)
        self._old: bytes | None = None

    def __call__(self, data: bytes) -> bytes:
        if self._old is None:
            match = MODEL_PAIR.search(data)
            if match is None:
                return data
            self._old = match.group(0)
        return data.replace(self._old, self._new)


async def forward_events(
    first: Event, events: AsyncIterator[Event], model: str
) -> AsyncGenerator[bytes, None]:
    """The events of a streamed answer as the upstream sent them, its model renamed; the
    upstream's own failure event, renamed too, goes with the error it raises."""
    rename = Renamer(model)
    try:
        async for event in Chained(first, events):
            if isinstance(event, RawEvents):
                data = rename(event.data)
                if event.last:  # the final event: out with the end of the body
                    yield Final(data)
                    return
                yield data
            elif isinstance(event, Finish):
                return
    except UpstreamError as err:
        if err.verbatim is not None:
            err.verbatim = rename(err.verbatim)
        raise
    raise Incomplete()


async def forward_body(first: RawBody, events: AsyncIterator[Event], model: str) -> bytes:
    """A whole answer as the upstream sent it, its model renamed, once it is complete."""
    async for event in Chained(first, events):
        if isinstance(event, Finish):
            return Renamer(model)(first.data)
    raise Incomplete()


def verbatim_or(err: APIError, api: str) -> bytes | None:
    """The upstream's own error event for a client of ``api``, when it sent one; never for a
    context overflow, which every client is told in its API's canonical form."""
    if isinstance(err, ContextOverflow):
        return None
    if isinstance(err, UpstreamError) and err.verbatim_api == api:
        return err.verbatim
    return None
