"""Markers in text that arrives in pieces (``<tool_calls>``, ``<think>``).

A network read may end in the middle of a marker, so a scanner holds back the tail that
could still become one, and only that: never more than the marker's length less one.
"""

from __future__ import annotations


def held_back(text: str, marker: str) -> int:
    """How many trailing characters of ``text`` could be the start of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
