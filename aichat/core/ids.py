"""Identifiers the gateway makes up: request ids, and ids of completions, messages, calls.

They must be unique, not secret: nothing is authorised by knowing one. So they come from
``random``'s generator, seeded from the OS, not from ``secrets``, which makes a system call
for each of the several ids every request needs. Python reseeds that generator in a forked
process (``aichat.workers``), so workers never repeat each other's ids.
"""

from __future__ import annotations

import random

_bits = random.getrandbits


def new_id(prefix: str = "", hex_digits: int = 24) -> str:
    """``prefix`` followed by ``hex_digits`` (an even number) random lowercase hex digits."""
    size = hex_digits // 2
    return prefix + _bits(size * 8).to_bytes(size, "big").hex()


def new_call_id() -> str:
    """An id for a tool call whose upstream did not name it."""
    return new_id("call_")
