"""The usage history's databases: a SQLite file by default, PostgreSQL with ``DATABASE_URL``.

Decisions:

- One schema, the same SQL text for both (``ON CONFLICT ... DO UPDATE`` is in SQLite since
  3.24 and PostgreSQL since 9.5); days are ISO text, which sorts as dates. The gateway
  creates and upgrades it at start (``MIGRATIONS``, one transaction, numbered in
  ``aichat_schema``); replicas starting together take turns (PostgreSQL: an advisory lock;
  SQLite: ``BEGIN IMMEDIATE``). Migrations only add, so a replica of the previous release
  keeps working beside an upgraded one.
- Exactly once: each gateway process writes batches numbered 1, 2, ... under an id of its
  own, and the transaction that adds a batch also moves the process's row in
  ``usage_writers`` to that number, unless it is there already; a retried batch whose first
  commit succeeded unseen is skipped.
- SQLite: the standard library's driver, on one thread of its own (its calls block), in WAL
  mode so that ``aichat usage`` and other workers read while one writes; writers on one
  host (``--workers``) queue on the file lock for up to ``_SQLITE_BUSY`` seconds.
- PostgreSQL: ``asyncpg`` (the ``postgres`` extra), an asyncio driver that needs no libpq;
  psycopg would also do, but asyncpg's binary protocol and pool fit an aiohttp process with
  no thread, and its wheels carry everything. Two connections at most per process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from aichat.core.config import ConfigError, Settings
from aichat.operations.history import COUNTS, HISTORY, DatabaseDown, History, Row, RowKey
from aichat.operations.metrics import METRICS

T = TypeVar("T")

_SQLITE_BUSY = 5.0  # seconds a SQLite statement waits for another process's write
_SQLITE_RETRY = 0.01  # seconds between tries to switch a new file to WAL
_KEEP_WRITERS = 90 * 86400  # seconds a stopped process's batch number is remembered
_LOCK = 0x616963686174  # PostgreSQL advisory lock taken while migrating ("aichat")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE usage_daily (day TEXT NOT NULL, key TEXT NOT NULL, model TEXT NOT NULL,"
        " upstream TEXT NOT NULL,"
        + "".join(f" {name} BIGINT NOT NULL DEFAULT 0," for name in COUNTS)
        + " PRIMARY KEY (day, key, model, upstream))",
        "CREATE TABLE usage_writers (writer TEXT PRIMARY KEY, batch BIGINT NOT NULL,"
        " written_at BIGINT NOT NULL)",
    ),
)
_COLUMNS = ("day", "key", "model", "upstream", *COUNTS)


def _sql(placeholder: Callable[[int], str]) -> dict[str, str]:
    """Every statement, with ``placeholder(n)`` for the n-th parameter (1-based)."""
    p = placeholder
    return {
        "version": "SELECT version FROM aichat_schema",
        "schema": "CREATE TABLE IF NOT EXISTS aichat_schema (version INTEGER NOT NULL)",
        "first": f"INSERT INTO aichat_schema (version) VALUES ({p(1)})",
        "set_version": f"UPDATE aichat_schema SET version = {p(1)}",
        "forget": f"DELETE FROM usage_writers WHERE written_at < {p(1)}",
        "claim": (
            "INSERT INTO usage_writers (writer, batch, written_at)"
            f" VALUES ({p(1)}, {p(2)}, {p(3)}) ON CONFLICT (writer) DO UPDATE"
            " SET batch = excluded.batch, written_at = excluded.written_at"
            " WHERE usage_writers.batch < excluded.batch"
        ),
        "add": (
            f"INSERT INTO usage_daily ({', '.join(_COLUMNS)})"
            f" VALUES ({', '.join(p(i + 1) for i in range(len(_COLUMNS)))})"
            " ON CONFLICT (day, key, model, upstream) DO UPDATE SET "
            + ", ".join(f"{name} = usage_daily.{name} + excluded.{name}" for name in COUNTS)
        ),
        "read": (
            f"SELECT {', '.join(_COLUMNS)} FROM usage_daily"
            f" WHERE day >= {p(1)} AND day <= {p(2)} ORDER BY day, key, model, upstream"
        ),
    }


def _values(rows: dict[RowKey, list[int]]) -> list[tuple[Any, ...]]:
    return [(*row, *sums) for row, sums in rows.items()]


def _open_sqlite(path: Path) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, waiting up to ``_SQLITE_BUSY`` for other writers.

    Switching a file to WAL takes its exclusive lock, and SQLite answers "database is locked"
    at once, without its busy timeout, when two processes (``--workers``) open a new file
    together; so the switch is retried here until the same deadline.
    """
    connection = sqlite3.connect(path, timeout=_SQLITE_BUSY, isolation_level=None)
    deadline = time.monotonic() + _SQLITE_BUSY
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                connection.close()
                raise
            time.sleep(_SQLITE_RETRY)
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


class SqliteDatabase:
    """The history in a SQLite file."""

    SQL = _sql(lambda n: f"?{n}")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="aichat-history")
        self._connection: sqlite3.Connection | None = None

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._connection is None:
                self._connection = _open_sqlite(self.path)
            return work(self._connection)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, run)
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseDown(f"{self.path}: {exc}") from None

    async def migrate(self) -> None:
        """Create or upgrade the schema; ``ConfigError`` if the file cannot be used."""

        def upgrade(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(self.SQL["schema"])
                found = db.execute(self.SQL["version"]).fetchone()
                if found is None:
                    db.execute(self.SQL["first"], (0,))
                for statements in MIGRATIONS[found[0] if found else 0 :]:
                    for statement in statements:
                        db.execute(statement)
                db.execute(self.SQL["set_version"], (len(MIGRATIONS),))
                db.execute(self.SQL["forget"], (int(time.time()) - _KEEP_WRITERS,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        try:
            await self._call(upgrade)
        except DatabaseDown as exc:
            raise ConfigError(
                f"AICHAT_USAGE_DB: cannot keep the usage history in {exc}: check the path "
                "and its permissions (or set DATABASE_URL)"
            ) from None

    async def write(self, writer: str, batch: int, rows: dict[RowKey, list[int]]) -> None:
        """Add ``rows`` unless this batch was added before."""

        def add(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                claimed = db.execute(self.SQL["claim"], (writer, batch, int(time.time())))
                if claimed.rowcount:
                    db.executemany(self.SQL["add"], _values(rows))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._call(add)

    async def read(self, since: str, until: str) -> list[Row]:
        """The rows of days ``since`` to ``until``."""
        found = await self._call(lambda db: db.execute(self.SQL["read"], (since, until)).fetchall())
        return [Row(*values) for values in found]

    async def close(self) -> None:
        """Close the file."""

        def close(db: sqlite3.Connection) -> None:
            db.close()

        if self._connection is not None:
            await self._call(close)
        self._thread.shutdown(wait=False)


class PostgresDatabase:
    """The history in PostgreSQL, shared by every replica."""

    SQL = _sql(lambda n: f"${n}")

    def __init__(self, url: str) -> None:
        try:
            import asyncpg
        except ImportError:
            raise ConfigError(
                "DATABASE_URL: PostgreSQL needs the asyncpg driver: pip install 'aichat[postgres]'"
            ) from None
        self._asyncpg: Any = asyncpg
        self._url = url
        self._pool: Any = None
        # Connection failures, server errors, and a connection lost mid-statement.
        self._errors = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

    async def _run(self, work: Callable[[Any], Any]) -> Any:
        """``work(connection)`` in one transaction."""
        try:
            if self._pool is None:
                self._pool = await self._asyncpg.create_pool(
                    self._url, min_size=0, max_size=2, timeout=5, command_timeout=10
                )
            async with self._pool.acquire() as connection, connection.transaction():
                return await work(connection)
        except self._errors as exc:
            raise DatabaseDown(f"PostgreSQL: {type(exc).__name__}: {exc}") from None

    async def migrate(self) -> None:
        """Create or upgrade the schema, one replica at a time."""

        async def upgrade(db: Any) -> None:
            await db.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            await db.execute(self.SQL["schema"])
            found = await db.fetchval(self.SQL["version"])
            if found is None:
                await db.execute(self.SQL["first"], 0)
            for statements in MIGRATIONS[found or 0 :]:
                for statement in statements:
                    await db.execute(statement)
            await db.execute(self.SQL["set_version"], len(MIGRATIONS))
            await db.execute(self.SQL["forget"], int(time.time()) - _KEEP_WRITERS)

        await self._run(upgrade)

    async def write(self, writer: str, batch: int, rows: dict[RowKey, list[int]]) -> None:
        """Add ``rows`` unless this batch was added before."""

        async def add(db: Any) -> None:
            claimed = await db.execute(self.SQL["claim"], writer, batch, int(time.time()))
            if claimed != "INSERT 0 0":
                await db.executemany(self.SQL["add"], _values(rows))

        await self._run(add)

    async def read(self, since: str, until: str) -> list[Row]:
        """The rows of days ``since`` to ``until``."""

        async def read(db: Any) -> list[Any]:
            found: list[Any] = await db.fetch(self.SQL["read"], since, until)
            return found

        return [Row(*values) for values in await self._run(read)]

    async def close(self) -> None:
        """Close the pool's connections."""
        if self._pool is not None:
            await self._pool.close()


def open_database(settings: Settings) -> SqliteDatabase | PostgresDatabase:
    """PostgreSQL when ``DATABASE_URL`` is set, else the SQLite file ``AICHAT_USAGE_DB``."""
    if settings.database_url is not None:
        return PostgresDatabase(settings.database_url.get_secret_value())
    return SqliteDatabase(settings.usage_db)


def keep_history(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx``: the usage history of ``settings``, written while the app runs."""

    async def history(app: web.Application) -> AsyncIterator[None]:
        kept = app[HISTORY] = History(open_database(settings))
        app[METRICS].registry.register(kept.collector())
        await kept.start()
        yield
        await kept.close()

    return history
