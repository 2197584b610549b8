"""The recording pass-through to llama.cpp that tests of tests/llama put between the gateway
and llama.cpp, to compare what a client is told with what llama.cpp itself reported."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.agents.recorder import Recorder
from tests.conftest import _start
from tests.llama.server import Llama


@pytest.fixture
async def recorded(llama: Llama) -> AsyncIterator[tuple[Recorder, str]]:
    """A recording pass-through to llama.cpp and its URL; a connection per request, as
    llama.cpp closes one after a stream (see test_llamacpp)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        recorder = Recorder(llama.url, session)
        runner, url = await _start(recorder.app())
        yield recorder, url
        await runner.cleanup()


@pytest.fixture
def recorder(recorded: tuple[Recorder, str]) -> Recorder:
    """What the pass-through kept."""
    return recorded[0]
