"""Unit-test fixtures: aioresponses for mocking upstream HTTP at the client edge."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core


class _SentRequest:
    """Stands in for the request writer of a request that has been sent completely."""

    output_size = 0


class _CompatResponse(aiohttp.ClientResponse):
    # aiohttp 3.14 made ``stream_writer`` a required argument; aioresponses 0.7.9 does not
    # pass it yet (pnuckowski/aioresponses#289). Drop this class once a release does.
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _SentRequest())
        super().__init__(*args, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, made to build responses that this aiohttp accepts."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _CompatResponse)
    with aioresponses() as mock:
        yield mock


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for providers under test."""
    async with aiohttp.ClientSession() as client:
        yield client
