"""What ``aichat serve --workers N`` keeps once for the whole gateway: limits, budgets, metrics.

Decisions:

- **The supervisor holds the state; the workers ask it.** Without ``REDIS_URL``, rate and
  concurrency counters and token budgets live in the supervisor, in the same in-memory
  stores one process uses (``MemoryStore``, ``MemoryUsage``), and every worker reaches them
  over its link (``aichat.operations.link``, a socket pair made before the fork): N workers
  then count exactly as one process does, one local round trip per counted request. The
  supervisor already lives exactly as long as the gateway, does no request work, and its
  workers die with it. Shared memory would need a lock across processes and a fixed layout
  for what are dictionaries of keys and leases; an embedded database would put a file
  write in the path of every request.
- With ``REDIS_URL`` set, Redis stays the store (it is shared with other replicas too); the
  link then carries the metrics and circuits (``aichat.operations.shared_circuits``) only.
- What a worker holds (concurrency leases, budget holds) is tied to its link: when the link
  ends, the supervisor gives them back, as Redis lets a dead replica's leases lapse. A
  question that timed out may still have been applied: a lease or a hold asked for in vain
  is given back at once (a notice, applied after the question).
- A link that ends or does not answer is ``StoreUnavailable``: ``AICHAT_REDIS_FAILURE``
  decides, as for a Redis down (``open``: allow with a warning; ``closed``: 503).
- **Metrics summed at scrape time.** A scrape, whichever worker takes it, asks the
  supervisor, which asks every worker for its samples (at most ``SNAPSHOT_TIMEOUT``), adds
  them up (``aichat.operations.metrics_sum``) and answers with the sums: an answer as large
  as one worker's metrics, whatever the number of workers. A worker that
  does not answer in time counts with the last samples it sent, so totals may lag, never go
  down; ``aichat_worker_up{worker}`` says which answered. If the supervisor does not answer,
  the scrape fails (503) rather than show one worker's counts as the gateway's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from aichat.core.config import Settings
from aichat.operations.budgets import Hold, MemoryUsage, RedisUsage, UsageStore
from aichat.operations.limits import CounterStore, MemoryStore, RedisStore, WindowCount
from aichat.operations.link import Handler, Link
from aichat.operations.metrics_sum import SNAPSHOT_TIMEOUT, Family, snapshot, summed
from aichat.operations.redis_pool import RedisPool, StoreUnavailable
from aichat.operations.shared_circuits import CircuitHub

log = logging.getLogger("aichat.shared")


def _windows(value: Iterable[str]) -> tuple[str, str]:
    day, month = (str(window) for window in value)
    return day, month


def _limits(value: Iterable[int]) -> tuple[int, int]:
    day, month = (int(limit) for limit in value)
    return day, month


class _Warned:
    """A warning logged at most every 10 s: a dead link stays dead."""

    def __init__(self) -> None:
        self._at = 0.0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._at > 10:
            self._at = now
            log.warning(message, *args)


class SharedCounters:
    """A worker's rate and concurrency counters: the supervisor's, over ``link``."""

    def __init__(self, link: Link) -> None:
        self._link = link

    async def count_request(self, key: str) -> WindowCount:
        """Count one request for ``key`` in the gateway's current window."""
        count, reset = await self._link.ask("count_request", key)
        return WindowCount(int(count), float(reset))

    async def acquire(self, key: str, limit: int, lease: str) -> bool:
        """Take one of the gateway's ``limit`` slots for ``key``."""
        try:
            return bool(await self._link.ask("acquire", key, limit, lease))
        except StoreUnavailable:
            with contextlib.suppress(StoreUnavailable):
                self._link.notice("release", key, lease)  # in case it was taken after all
            raise

    async def release(self, key: str, lease: str) -> None:
        """Give a slot back (applied after everything this worker sent before)."""
        self._link.notice("release", key, lease)

    async def renew(self, leases: dict[str, str]) -> None:
        """Nothing to do: the supervisor keeps a lease as long as this worker's link."""


class SharedUsage:
    """A worker's token usage and budget holds: the supervisor's, over ``link``."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._lost = _Warned()

    def charge(self, windows: tuple[str, str], increments: Mapping[str, int]) -> None:
        """Send the increments (applied before anything this worker sends later)."""
        try:
            self._link.notice("charge", windows, dict(increments))
        except StoreUnavailable:
            self._lost.warn("usage not counted: the supervisor's link has ended")

    async def spent(self, windows: tuple[str, str], key: str) -> tuple[int, int]:
        """Tokens ``key`` used in the day and month windows, by every worker."""
        day, month = await self._link.ask("spent", windows, key)
        return int(day), int(month)

    async def hold(
        self,
        windows: tuple[str, str],
        hold: Hold,
        amount: int,
        limits: tuple[int, int],
    ) -> tuple[bool, tuple[int, int]]:
        """Hold ``amount`` in the supervisor's store, atomically there."""
        try:
            admitted, (day, month) = await self._link.ask(
                "hold", windows, hold.subject, hold.lease, amount, limits
            )
        except StoreUnavailable:
            self.release(hold)  # in case it was held after all
            raise
        return bool(admitted), (int(day), int(month))

    def release(self, hold: Hold) -> None:
        """Give ``hold`` back (after the charges this worker sent before)."""
        with contextlib.suppress(StoreUnavailable):  # the supervisor drops it with the link
            self._link.notice("release_hold", hold.subject, hold.lease)

    async def close(self) -> None:
        """Nothing pending: every charge was sent when it was made."""


def counter_store(settings: Settings, pool: RedisPool | None, link: Link | None) -> CounterStore:
    """Rate and concurrency counters: Redis when ``REDIS_URL`` is set, else the supervisor's
    for a worker of ``--workers``, else this process's memory."""
    if pool is not None:
        return RedisStore(pool, settings.redis_prefix)
    return SharedCounters(link) if link is not None else MemoryStore()


def usage_store(settings: Settings, pool: RedisPool | None, link: Link | None) -> UsageStore:
    """Token usage: where ``counter_store`` keeps the counters."""
    if pool is not None:
        return RedisUsage(pool, settings.redis_prefix)
    return SharedUsage(link) if link is not None else MemoryUsage()


def worker_handlers(registry: CollectorRegistry) -> dict[str, Handler]:
    """What a worker answers the supervisor: its metrics, numbered so that an older answer
    arriving late is never taken for a newer one."""
    taken = 0

    async def samples() -> list[Any]:
        nonlocal taken
        taken += 1
        return [taken, snapshot(registry)]

    return {"snapshot": samples}


class Hub:
    """The supervisor's end: the gateway's one set of counters, usage and metrics."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counters = MemoryStore()
        self.usage = MemoryUsage()
        self._links: dict[int, Link] = {}
        self._samples: dict[int, tuple[int, list[Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.circuits = CircuitHub(self._broadcast, clock)

    def _broadcast(self, name: str, exported: list[Any]) -> None:
        for link in self._links.values():
            with contextlib.suppress(StoreUnavailable):  # a worker gone: nothing to follow
                link.notice("circuit", name, exported)

    async def join(self, worker: int, sock: socket.socket) -> None:
        """Serve worker number ``worker`` over its end of the link, ``sock``."""
        leases: dict[str, str] = {}  # lease -> key, of this worker
        holds: dict[str, str] = {}  # lease -> subject, of this worker
        handlers = self._handlers(leases, holds)
        link = self._links[worker] = await Link.over(sock, handlers, concurrent={"metrics"})
        task = asyncio.create_task(self._give_back_when_ended(link, leases, holds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_back_when_ended(
        self, link: Link, leases: dict[str, str], holds: dict[str, str]
    ) -> None:
        await link.ended.wait()
        for lease, key in leases.items():
            await self.counters.release(key, lease)
        for lease, subject in holds.items():
            self.usage.release(Hold(subject, lease))
        leases.clear()
        holds.clear()

    def _handlers(self, leases: dict[str, str], holds: dict[str, str]) -> dict[str, Handler]:
        counters, usage = self.counters, self.usage

        async def count_request(key: str) -> list[float]:
            window = await counters.count_request(str(key))
            return [window.count, window.reset]

        async def acquire(key: str, limit: int, lease: str) -> bool:
            taken = await counters.acquire(str(key), int(limit), str(lease))
            if taken:
                leases[lease] = key
            return taken

        async def release(key: str, lease: str) -> None:
            leases.pop(lease, None)
            await counters.release(str(key), str(lease))

        async def charge(windows: list[str], increments: dict[str, int]) -> None:
            usage.charge(_windows(windows), {str(k): int(v) for k, v in increments.items()})

        async def spent(windows: list[str], key: str) -> tuple[int, int]:
            return await usage.spent(_windows(windows), str(key))

        async def hold(
            windows: list[str], subject: str, lease: str, amount: int, limits: list[int]
        ) -> list[Any]:
            held = Hold(str(subject), str(lease))
            admitted, used = await usage.hold(_windows(windows), held, int(amount), _limits(limits))
            if admitted:
                holds[held.lease] = held.subject
            return [admitted, used]

        async def release_hold(subject: str, lease: str) -> None:
            holds.pop(lease, None)
            usage.release(Hold(str(subject), str(lease)))

        return {
            "count_request": count_request,
            "acquire": acquire,
            "release": release,
            "charge": charge,
            "spent": spent,
            "hold": hold,
            "release_hold": release_hold,
            "metrics": self._metrics,
            **self.circuits.handlers(),
        }

    async def _metrics(self) -> list[Family]:
        """Every worker's metrics added up: fresh where it answers in time, else its last."""
        workers = sorted(self._links)
        answers = await asyncio.gather(
            *(self._ask_samples(self._links[worker]) for worker in workers)
        )
        fresh = set()
        for worker, answer in zip(workers, answers, strict=True):
            if answer is None:
                continue
            taken, samples = answer
            if taken > self._samples.get(worker, (0, []))[0]:
                self._samples[worker] = (taken, samples)
            fresh.add(worker)
        # Every worker is listed, one that never answered too (up 0, nothing to count yet).
        return summed(
            [
                (str(worker), worker in fresh, self._samples.get(worker, (0, []))[1])
                for worker in workers
            ]
        )

    async def _ask_samples(self, link: Link) -> tuple[int, list[Any]] | None:
        try:
            taken, samples = await link.ask("snapshot", seconds=SNAPSHOT_TIMEOUT)
        except StoreUnavailable:
            return None
        return int(taken), samples

    async def close(self) -> None:
        """End every link."""
        for link in self._links.values():
            await link.close()
