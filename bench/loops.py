"""The event loop the benchmark's own tools run on."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    """``uvloop`` when it is installed (the bench extra brings it), else ``asyncio``."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when installed, else on asyncio's default loop.

    The fake upstream and the load generator share one core: the less CPU they spend, the
    more of the measured difference is the gateway's own.
    """
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
