"""Usage history: requests, tokens and cost per UTC day, key, model and upstream, in a database.

Decisions:

- One row per day x key x model x upstream, summed as answers finish: the history's size
  grows with days, keys and models, never with traffic. Costs are whole nano-dollars, so
  sums are exact however many gateways add to them.
- A request never waits on the database: ``add`` only sums into a table in memory, and one
  writer task per process writes that table every ``WRITE_EVERY`` seconds as one
  transaction (``aichat.operations.history_db``: SQLite by default, PostgreSQL with
  ``DATABASE_URL``).
- A write that fails (the database is down, locked or slow) is logged, counted in
  ``aichat_usage_history_write_failures_total`` and tried again as the same batch;
  what arrives meanwhile waits in the next batch. The database remembers the batches it
  has applied, so a batch whose commit was cut off before its answer is never added twice.
  Memory stays bounded through a long outage (``MAX_PENDING_ROWS``; past it, new rows are
  dropped, logged and counted). What is still unwritten when the process stops after
  ``CLOSE_WITHIN`` seconds of trying is lost: logged with its totals, and shown while the
  gateway runs by ``aichat_usage_history_unwritten_requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aichat.operations.pricing import Cost, usd
from aichat.providers.base import Usage

log = logging.getLogger("aichat.history")

WRITE_EVERY = 1.0  # seconds between writes of what finished meanwhile
WRITE_TIMEOUT = 10.0  # seconds one write may take before it counts as failed
CLOSE_WITHIN = 5.0  # seconds a stopping gateway keeps trying to write what is left
MAX_PENDING_ROWS = 100_000  # rows waiting in memory while the database is unreachable
_RETRY_CLOSING = 0.5  # seconds between a stopping gateway's tries
_WARN_EVERY = 10.0  # seconds between two warnings about the same trouble

RowKey = tuple[str, str, str, str]  # (UTC day, key, model, upstream)
COUNTS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_nano_usd",
    "cache_saved_nano_usd",
)


@dataclass(frozen=True, slots=True)
class Row:
    """One day's usage of one key on one model through one upstream."""

    day: str  # UTC, ISO: "2026-12-02"
    key: str
    model: str
    upstream: str
    requests: int = 0
    input_tokens: int = 0  # every prompt token, cached or not (OpenAI's prompt_tokens)
    output_tokens: int = 0
    cache_read_tokens: int = 0  # parts of input_tokens
    cache_write_tokens: int = 0
    cost_nano_usd: int = 0
    cache_saved_nano_usd: int = 0  # what cache reads saved against the input price

    def counts(self) -> tuple[int, ...]:
        """The summed columns, in ``COUNTS`` order."""
        return tuple(getattr(self, name) for name in COUNTS)


class DatabaseDown(Exception):
    """The history database could not be reached or refused a statement."""


class Database(Protocol):
    """Where the history is kept (``aichat.operations.history_db``)."""

    async def migrate(self) -> None:
        """Create the tables, or bring them to this release's schema."""
        ...

    async def write(self, writer: str, batch: int, rows: dict[RowKey, list[int]]) -> None:
        """Add ``rows`` in one transaction, unless ``writer``'s ``batch`` was added before."""
        ...

    async def read(self, since: str, until: str) -> list[Row]:
        """Every row of the UTC days ``since`` to ``until`` (ISO dates, both included)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def utc_day(now: float) -> str:
    """The UTC day ``now`` falls in, as an ISO date."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class History:
    """Sums answers into rows in memory; one task writes them to ``database``."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._pending: dict[RowKey, list[int]] = {}
        self._writer_id = uuid.uuid4().hex  # this process, to the database
        self._batches = 0
        self._batch: tuple[int, dict[RowKey, list[int]]] | None = None  # failed, to retry
        self._migrated = False
        self._stopping = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._day = ""
        self._day_ends = 0.0
        self.write_failures = 0
        self.lost_requests = 0
        self._warned_at = 0.0

    def add(self, key: str, model: str, upstream: str, usage: Usage, cost: Cost) -> None:
        """Count one answer (never waits)."""
        now = time.time()
        if now >= self._day_ends:
            self._day = utc_day(now)
            self._day_ends = (now // 86400 + 1) * 86400
        row = (self._day, key, model, upstream)
        sums = self._pending.get(row)
        if sums is None:
            if len(self._pending) >= MAX_PENDING_ROWS:
                self.lost_requests += 1
                self._warn("usage history: too much unwritten, an answer was not recorded")
                return
            sums = self._pending[row] = [0] * len(COUNTS)
        sums[0] += 1
        sums[1] += usage.prompt_tokens
        sums[2] += usage.completion_tokens
        sums[3] += usage.cache_read_tokens
        sums[4] += usage.cache_write_tokens
        sums[5] += cost.nano_usd
        sums[6] += cost.saved_nano_usd

    @property
    def unwritten_requests(self) -> int:
        """Answers counted here and not yet in the database."""
        batch = self._batch[1] if self._batch else {}
        return sum(sums[0] for table in (batch, self._pending) for sums in table.values())

    async def start(self) -> None:
        """Create or upgrade the schema, and start writing.

        A database that cannot be reached yet is tried again with the first write; one that
        can never work (an unwritable SQLite path) raises ``ConfigError`` and stops the start.
        """
        try:
            await self.database.migrate()
            self._migrated = True
        except DatabaseDown as exc:
            self.write_failures += 1
            self._warn(f"usage history database unavailable at start ({exc}); will retry")
        self._writer = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), WRITE_EVERY)
            await self._write_all()

    async def _write_all(self) -> bool:
        """Write the batch being retried, then what is pending; False at the first failure."""
        while self._batch is not None or self._pending:
            if self._batch is None:
                self._batches += 1
                self._batch, self._pending = (self._batches, self._pending), {}
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    if not self._migrated:
                        await self.database.migrate()
                        self._migrated = True
                    await self.database.write(self._writer_id, *self._batch)
            except (DatabaseDown, TimeoutError) as exc:
                self.write_failures += 1
                self._warn(f"usage history not written yet ({exc or 'timed out'}); will retry")
                return False
            self._batch = None
        return True

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at > _WARN_EVERY:
            self._warned_at = now
            log.warning(message)

    async def close(self) -> None:
        """Stop writing after one last try (at most ``CLOSE_WITHIN`` s); log what is lost."""
        self._stopping.set()
        try:
            async with asyncio.timeout(CLOSE_WITHIN):
                if self._writer is not None:
                    await self._writer
                # Tries until written or out of time: only the timeout ends it unwritten, so
                # whatever is lost is always logged and counted below.
                while True:
                    if await self._write_all():
                        break
                    await asyncio.sleep(_RETRY_CLOSING)
        except TimeoutError:
            unwritten = [self._batch[1] if self._batch else {}, self._pending]
            rows = [sums for table in unwritten for sums in table.values()]
            requests = sum(sums[0] for sums in rows)
            self.lost_requests += requests
            log.error(
                "usage history: %d answers (%s USD) could not be written before shutdown",
                requests,
                usd(sum(sums[5] for sums in rows)),
            )
        await self.database.close()

    def collector(self) -> Collector:
        """The history's metrics, read at scrape time."""
        return _HistoryMetrics(self)


class _HistoryMetrics(Collector):
    def __init__(self, history: History) -> None:
        self._history = history

    def collect(self) -> Iterator[Metric]:
        history = self._history
        yield CounterMetricFamily(
            "aichat_usage_history_write_failures",
            "Writes to the usage history database that failed (each is retried).",
            value=history.write_failures,
        )
        yield GaugeMetricFamily(
            "aichat_usage_history_unwritten_requests",
            "Answers counted but not yet written to the usage history database.",
            value=history.unwritten_requests,
        )
        yield CounterMetricFamily(
            "aichat_usage_history_lost_requests",
            "Answers the usage history could not keep (memory bound reached during an outage).",
            value=history.lost_requests,
        )


HISTORY = web.AppKey("history", History)
