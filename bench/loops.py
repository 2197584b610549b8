"""The event loop the benchmark's own tools run on."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
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


def run_proxy(serve: Callable[[int, str], Coroutine[Any, Any, None]], description: str) -> None:
    """The command line of a bare proxy: ``--port N --upstream URL``, then ``serve`` them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    run_fast(serve(args.port, args.upstream))
