"""A bounded request/response link between two processes over one stream socket.

``aichat serve --workers`` joins each worker to its supervisor with one (a socket pair made
before the fork): the workers ask the supervisor's shared limits, budgets and circuits, and
the supervisor asks the workers for their metrics (``aichat.operations.shared``).

Decisions:

- Frames are a 4-byte big-endian length and a JSON array: ``[0, id, op, args]`` a request,
  ``[1, op, args]`` a notice (no answer), ``[2, id, ok, value]`` an answer. Both ends may
  ask; operations are looked up by name among the handlers the receiving end registered.
- Bounded: a frame over ``MAX_FRAME`` bytes, or one that does not parse, ends the link
  (the peer is broken, and nothing after it can be framed reliably); at most ``max_asks``
  questions wait for answers (a caller waits ``wait`` seconds for a turn, then
  ``StoreBusy``), each at most ``timeout`` seconds (then ``StoreUnavailable``); at most
  ``MAX_UNSENT`` bytes wait for a peer that stopped reading, then what is sent fails
  (``StoreUnavailable``) rather than grow this process's memory.
- Handlers run in arrival order, one at a time, so what one end sends in order is applied in
  that order (a charge before the release of the same request's hold). A handler listed in
  ``concurrent`` runs as a task instead, for those that themselves wait on other links.
- A link that ends stays ended: every waiting and later question raises
  ``StoreUnavailable``, which the stores' users turn into ``AICHAT_REDIS_FAILURE``'s answer,
  as for a Redis that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from aiohttp import web

from aichat.operations.redis_pool import StoreBusy, StoreUnavailable, acquire_within

log = logging.getLogger("aichat.link")

MAX_FRAME = 8 << 20  # bytes: a worker's metrics, the largest frame, are far below this
MAX_UNSENT = 2 * MAX_FRAME  # bytes waiting for the other end to read them, at most
_HEADER = struct.Struct(">I")
_ASK, _NOTICE, _ANSWER = 0, 1, 2

Handler = Callable[..., Awaitable[Any]]


class Link:
    """One end of a link: asks, notices and answers over ``reader`` and ``writer``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handlers: Mapping[str, Handler],
        *,
        concurrent: Collection[str] = (),
        timeout: float = 2.0,
        wait: float = 2.0,
        max_asks: int = 1024,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._handlers = handlers
        self._concurrent = frozenset(concurrent)
        self.timeout = timeout
        self._wait = wait
        self._max_asks = max_asks
        self._turns = asyncio.Semaphore(max_asks)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._receiver: asyncio.Task[None] | None = None
        self.ended = asyncio.Event()

    @classmethod
    async def over(cls, sock: Any, handlers: Mapping[str, Handler], **options: Any) -> Link:
        """A started link over the connected stream socket ``sock``."""
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_FRAME)
        link = cls(reader, writer, handlers, **options)
        link.start()
        return link

    def start(self) -> None:
        """Start reading what the other end sends."""
        self._receiver = asyncio.create_task(self._receive())

    async def ask(self, op: str, *args: Any, seconds: float | None = None) -> Any:
        """The other end's answer to ``op(*args)``, waited for at most ``seconds`` (default
        ``timeout``); its handler's error is raised as ``StoreUnavailable`` too."""
        if self.ended.is_set():
            raise StoreUnavailable("the supervisor's link has ended")
        if not await acquire_within(self._turns, self._wait):
            raise StoreBusy(f"{self._max_asks} questions waiting on the link")
        try:
            self._next_id += 1
            ask_id = self._next_id
            answer = self._waiting[ask_id] = asyncio.get_running_loop().create_future()
            try:
                self._send([_ASK, ask_id, op, list(args)])
                async with asyncio.timeout(self.timeout if seconds is None else seconds):
                    ok, value = await answer
            except TimeoutError:
                raise StoreUnavailable(f"no answer to {op} in time") from None
            finally:
                self._waiting.pop(ask_id, None)
        finally:
            self._turns.release()
        if not ok:
            raise StoreUnavailable(f"{op} failed: {value}")
        return value

    def notice(self, op: str, *args: Any) -> None:
        """Send ``op(*args)`` without waiting for anything; ``StoreUnavailable`` if ended."""
        if self.ended.is_set():
            raise StoreUnavailable("the supervisor's link has ended")
        self._send([_NOTICE, op, list(args)])

    def _send(self, message: list[Any]) -> None:
        if self._writer.transport.get_write_buffer_size() > MAX_UNSENT:
            raise StoreUnavailable("the other process is not reading")
        data = json.dumps(message, separators=(",", ":")).encode()
        if len(data) > MAX_FRAME:
            raise StoreUnavailable(f"a frame of {len(data)} bytes is too large")
        self._writer.write(_HEADER.pack(len(data)) + data)

    async def _receive(self) -> None:
        try:
            while True:
                (size,) = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
                if size > MAX_FRAME:
                    raise ValueError(f"frame of {size} bytes")
                message = json.loads(await self._reader.readexactly(size))
                await self._take(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the other end closed
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            log.error("link to the other process broken (%s): closing it", exc)
        finally:
            self._end()

    async def _take(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == _ANSWER:
            _, ask_id, ok, value = message
            future = self._waiting.get(ask_id)
            if future is not None and not future.done():
                future.set_result((bool(ok), value))
            return
        if kind == _NOTICE:
            _, op, args = message
            with contextlib.suppress(StoreUnavailable):  # logged by _run
                await self._run(op, args)
            return
        _, ask_id, op, args = message
        if op in self._concurrent:
            task = asyncio.create_task(self._answer(ask_id, op, args))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            await self._answer(ask_id, op, args)

    async def _answer(self, ask_id: int, op: str, args: list[Any]) -> None:
        try:
            value = await self._run(op, args)
        except StoreUnavailable as exc:
            reply = [_ANSWER, ask_id, False, str(exc)]
        else:
            reply = [_ANSWER, ask_id, True, value]
        if not self.ended.is_set():
            try:
                self._send(reply)
            except StoreUnavailable as exc:  # an answer too large: the asker gets an error
                self._send([_ANSWER, ask_id, False, str(exc)])
            await self._writer.drain()

    async def _run(self, op: str, args: list[Any]) -> Any:
        handler = self._handlers.get(op)
        if handler is None:
            raise StoreUnavailable(f"unknown operation {op!r}")
        try:
            return await handler(*args)
        except (TypeError, ValueError, KeyError) as exc:  # arguments of the wrong shape
            log.error("link operation %s failed: %r", op, exc)
            raise StoreUnavailable(f"{type(exc).__name__}") from None

    def _end(self) -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        for future in self._waiting.values():
            if not future.done():
                future.set_result((False, "the link has ended"))
        self._writer.close()

    async def close(self) -> None:
        """End the link and stop reading."""
        self._end()
        for task in [self._receiver, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


WORKER_LINK = web.AppKey("worker_link", Link)
