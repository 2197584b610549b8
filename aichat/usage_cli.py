"""``aichat usage``: tokens and requests per key and model, today and this month (UTC).

Read from the store the gateways write (Redis, ``REDIS_URL``): a gateway without Redis counts
in its own memory, which no other process can read, so the command refuses to guess.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TextIO

from aichat.core.config import ConfigError, Settings
from aichat.operations.budgets import RedisUsage, rows, window_ids
from aichat.operations.redis_pool import RedisPool, StoreUnavailable

_COLUMNS = (
    "key",
    "model",
    "today_prompt",
    "today_completion",
    "today_requests",
    "month_prompt",
    "month_completion",
    "month_requests",
)


async def _read(settings: Settings, windows: tuple[str, str]) -> tuple[dict[str, int], ...]:
    assert settings.redis_url is not None
    pool = RedisPool(settings.redis_url)
    try:
        return await RedisUsage(pool, settings.redis_prefix).read(windows)
    finally:
        await pool.close()


def print_usage(settings: Settings, out: TextIO, as_json: bool = False) -> None:
    """Print the usage table (or JSON lines); ``ConfigError`` when there is no store to read."""
    if not settings.redis_url:
        raise ConfigError(
            "aichat usage reads the usage gateways keep in Redis: set REDIS_URL "
            "(without it each gateway counts in its own memory; see /metrics)."
        )
    windows = window_ids(time.time())
    try:
        day, month = asyncio.run(_read(settings, windows))
    except StoreUnavailable as exc:
        raise ConfigError(f"REDIS_URL: cannot read usage ({exc})") from None
    table = list(rows(day, month))
    if as_json:
        for key, model, counts in table:
            out.write(json.dumps(dict(zip(_COLUMNS, [key, model, *counts], strict=True))) + "\n")
        return
    out.write(f"UTC day {windows[0]}, month {windows[1]}\n")
    cells = [list(_COLUMNS), *[[key, model, *map(str, counts)] for key, model, counts in table]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    for row in cells:
        out.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            + "\n"
        )
