"""Small summaries of latency samples."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for no values)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary_ms(seconds: list[float]) -> dict[str, float] | None:
    """p50, p90, p99, max and mean, in milliseconds; None when there are no samples."""
    if not seconds:
        return None
    values = sorted(seconds)
    return {
        "p50": round(percentile(values, 50) * 1000, 4),
        "p90": round(percentile(values, 90) * 1000, 4),
        "p99": round(percentile(values, 99) * 1000, 4),
        "max": round(values[-1] * 1000, 4),
        "mean": round(sum(values) / len(values) * 1000, 4),
        "n": len(values),
    }
