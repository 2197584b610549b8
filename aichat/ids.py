"""Identifiers the gateway makes up: request ids, and ids of completions, messages, calls.

They must be unique, not secret: nothing is authorised by knowing one. So they come from a
``random.Random`` seeded once from the OS, not from ``secrets``, which makes a system call
for each of the several ids every request needs.
"""

from __future__ import annotations

import random

_bits = random.Random().getrandbits


def new_id(prefix: str = "", hex_digits: int = 24) -> str:
    """``prefix`` followed by ``hex_digits`` random lowercase hex digits."""
    return f"{prefix}{_bits(hex_digits * 4):0{hex_digits}x}"
