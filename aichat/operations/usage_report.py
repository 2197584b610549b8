"""Reports from the usage history: per group and day, totals, top keys, cache savings.

One place turns history rows into what people read, so the usage page, its JSON API and
``aichat usage`` always agree. Pure functions of the rows: the database query is the
caller's. Dollars leave here as numbers rounded to the nano-dollar the history counts in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any, Literal

from aichat.operations.history import COUNTS, Row

GroupBy = Literal["key", "model", "upstream"]
GROUPS: tuple[GroupBy, ...] = ("key", "model", "upstream")
MAX_DAYS = 366  # the longest range one report covers
TOP = 10  # keys in a report's top list


def dollars(nano: int) -> float:
    """``nano`` nano-dollars in dollars, as a JSON number."""
    return round(nano / 1e9, 9)


def day_range(since: date, until: date) -> list[str]:
    """Every ISO day from ``since`` to ``until``, both included."""
    return [(since + timedelta(days=n)).isoformat() for n in range((until - since).days + 1)]


def _sums(rows: Iterable[Row], by: str) -> dict[str, Counter[str]]:
    sums: dict[str, Counter[str]] = {}
    for row in rows:
        counts = sums.setdefault(getattr(row, by), Counter())
        for name in COUNTS:
            counts[name] += getattr(row, name)
    return sums


def summary(counts: Counter[str]) -> dict[str, Any]:
    """Requests, tokens, cost, cache-read share and savings of summed ``counts``."""
    inputs = counts["input_tokens"]
    return {
        "requests": counts["requests"],
        "input_tokens": inputs,
        "output_tokens": counts["output_tokens"],
        "cache_read_tokens": counts["cache_read_tokens"],
        "cache_write_tokens": counts["cache_write_tokens"],
        "cost_usd": dollars(counts["cost_nano_usd"]),
        "cache_saved_usd": dollars(counts["cache_saved_nano_usd"]),
        "cache_read_share": round(counts["cache_read_tokens"] / inputs, 4) if inputs else 0.0,
    }


def table(rows: Iterable[Row], by: GroupBy) -> list[dict[str, Any]]:
    """One summary per ``by`` value, most expensive first (then by name)."""
    sums = _sums(rows, by)
    order = sorted(sums, key=lambda name: (-sums[name]["cost_nano_usd"], name))
    return [{by: name, **summary(sums[name])} for name in order]


def report(rows: list[Row], since: date, until: date, by: GroupBy) -> dict[str, Any]:
    """The usage page's data: daily series per group, totals and the top keys."""
    days = day_range(since, until)
    index = {day: n for n, day in enumerate(days)}
    series: dict[str, tuple[list[int], list[int]]] = {}  # name -> (nano-dollars, tokens)
    for row in rows:
        nano, tokens = series.setdefault(getattr(row, by), ([0] * len(days), [0] * len(days)))
        nano[index[row.day]] += row.cost_nano_usd
        tokens[index[row.day]] += row.input_tokens + row.output_tokens
    totals: Counter[str] = Counter()
    for counts in _sums(rows, "key").values():
        totals.update(counts)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "by": by,
        "days": days,
        "series": [
            {"name": name, "cost_usd": [dollars(n) for n in nano], "tokens": tokens}
            for name, (nano, tokens) in sorted(series.items())
        ],
        "totals": summary(totals),
        "top_keys": table(rows, "key")[:TOP],
    }
