"""``aichat usage``: requests, tokens and spend per key, model or upstream from the usage history.

It reads the database the gateways write (``aichat.operations.history_db``): PostgreSQL with
``DATABASE_URL``, else the SQLite file ``AICHAT_USAGE_DB``, which must exist (the command never
creates an empty history to report on). Days are UTC, ``--since`` and ``--until`` both included;
the default is this month so far. The figures are those of the usage page and its API
(``aichat.operations.usage_report``), as a table, JSON lines or CSV.
"""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import UTC, date, datetime
from typing import Any, TextIO

from aichat.core.config import ConfigError, Settings
from aichat.operations.history import DatabaseDown, Row
from aichat.operations.history_db import open_database
from aichat.operations.usage_report import MAX_DAYS, GroupBy, table

COLUMNS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "cache_saved_usd",
)


def parse_day(value: str) -> date:
    """An ISO date for ``--since`` / ``--until`` (argparse shows the error)."""
    return date.fromisoformat(value)


async def _read(settings: Settings, since: date, until: date) -> list[Row]:
    database = open_database(settings)
    try:
        return await database.read(since.isoformat(), until.isoformat())
    finally:
        await database.close()


def usage_rows(
    settings: Settings, since: date | None, until: date | None, by: GroupBy
) -> tuple[date, date, list[dict[str, Any]]]:
    """The range read and one summary per ``by`` value; ``ConfigError`` if there is no history."""
    until = until or datetime.now(UTC).date()
    since = since or until.replace(day=1)
    if since > until or (until - since).days >= MAX_DAYS:
        raise ConfigError(
            f"--since must be on or before --until, and at most {MAX_DAYS} days before it"
        )
    if settings.database_url is None and not settings.usage_db.is_file():
        raise ConfigError(
            f"no usage history at {settings.usage_db}: set AICHAT_USAGE_DB to the file the "
            "gateway writes (or DATABASE_URL to its PostgreSQL)"
        )
    try:
        rows = asyncio.run(_read(settings, since, until))
    except DatabaseDown as exc:
        raise ConfigError(f"cannot read the usage history: {exc}") from None
    return since, until, table(rows, by)


def print_usage(
    settings: Settings,
    out: TextIO,
    since: date | None = None,
    until: date | None = None,
    by: GroupBy = "key",
    output: str = "table",
) -> None:
    """Print the usage of ``since`` to ``until`` per ``by`` as a table, JSON lines or CSV."""
    since, until, summaries = usage_rows(settings, since, until, by)
    columns = (by, *COLUMNS)
    if output == "json":
        for summary in summaries:
            out.write(json.dumps({name: summary[name] for name in columns}) + "\n")
        return
    if output == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([summary[name] for name in columns] for summary in summaries)
        return
    out.write(f"UTC {since.isoformat()} to {until.isoformat()}\n")
    cells = [list(columns), *[[str(summary[name]) for name in columns] for summary in summaries]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )
