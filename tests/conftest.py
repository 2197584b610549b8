"""Shared fixtures: a real fake upstream and a real gateway, both on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from aichat.app import create_app
from aichat.core.config import Settings
from aichat.server import runner
from tests.fakes import FakeAichats, FakeOpenAI
from tests.fakes_native import FakeAnthropic, FakeResponses
from tests.llama.server import llama  # noqa: F401 (the real llama.cpp, for any test that asks)
from tests.postgres import Cluster, binaries, cluster
from tests.redis import redis_server

API_KEY = "sk-test-key-0123456789"
# Test traffic stays on loopback even where a proxy is configured.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


async def _start(
    app: web.Application, app_runner: web.AppRunner | None = None
) -> tuple[web.AppRunner, str]:
    app_runner = app_runner or web.AppRunner(app, handler_cancellation=True)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    host, port = app_runner.addresses[0][:2]
    return app_runner, f"http://{host}:{port}"


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[FakeAichats, str]]:
    """A fake aichats service and its base URL."""
    fake = FakeAichats()
    app_runner, url = await _start(fake.app())
    yield fake, url
    await app_runner.cleanup()


@pytest.fixture
async def openai_upstream() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    """A fake OpenAI-compatible upstream and its base URL (ending in ``/v1``)."""
    fake = FakeOpenAI()
    app_runner, url = await _start(fake.app())
    yield fake, f"{url}/v1"
    await app_runner.cleanup()


@pytest.fixture
async def claude_up() -> AsyncIterator[tuple[FakeAnthropic, str]]:
    """A fake Anthropic Messages upstream and its base URL (without ``/v1``)."""
    fake = FakeAnthropic()
    app_runner, url = await _start(fake.app())
    yield fake, url
    await app_runner.cleanup()


@pytest.fixture
async def responses_up() -> AsyncIterator[tuple[FakeResponses, str]]:
    """A fake OpenAI Responses upstream and its base URL (ending in ``/v1``)."""
    fake = FakeResponses()
    app_runner, url = await _start(fake.app())
    yield fake, f"{url}/v1"
    await app_runner.cleanup()


@dataclass
class Gateway:
    """A running gateway: its URL, app and a raw HTTP session for byte-level checks."""

    url: str
    app: web.Application
    http: aiohttp.ClientSession

    def sdk(self, api_key: str = API_KEY) -> openai.AsyncOpenAI:
        """The official OpenAI SDK pointed at this gateway, validating response shapes strictly."""
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1",
            api_key=api_key,
            max_retries=0,
            _strict_response_validation=True,
        )

    async def post_chat(
        self, body: dict[str, Any], key: str | None = API_KEY
    ) -> aiohttp.ClientResponse:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await self.http.post(f"{self.url}/v1/chat/completions", json=body, headers=headers)


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(
    upstream: tuple[FakeAichats, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[GatewayFactory]:
    """Start gateways in front of the fake upstream; keyword arguments override settings.

    Each keeps its usage history in a SQLite file of its own, unless told otherwise.
    """
    started: list[web.AppRunner] = []
    http = aiohttp.ClientSession()

    async def make(**overrides: Any) -> Gateway:
        values: dict[str, Any] = {
            "aichats_base_url": upstream[1],
            "api_keys": (API_KEY,),
            "host": "127.0.0.1",
            "port": 0,
            "usage_db": tmp_path_factory.mktemp("history") / "usage.db",
            # No shedding for a slow event loop (aichat.operations.loop_lag): client, gateway
            # and upstream share this process's loop, and what a test sees must not depend
            # on how busy the machine is. Tests of shedding turn it on.
            "max_loop_lag": 0,
        }
        values.update(overrides)
        app = create_app(Settings(**values))
        app_runner, url = await _start(app, runner(app))
        started.append(app_runner)
        return Gateway(url, app, http)

    yield make
    await http.close()
    for app_runner in started:
        await app_runner.cleanup()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    """A gateway with default settings in front of the fake upstream."""
    return await make_gateway()


@pytest.fixture
def fake(upstream: tuple[FakeAichats, str]) -> FakeAichats:
    """The fake upstream's behaviour knobs."""
    return upstream[0]


async def inside_one_rate_window(seconds: float) -> None:
    """Start where ``seconds`` are left before the rate window (a clock minute) turns.

    Rate limits count per clock minute: a test that counts across the turn sees the count
    start again, and fails once in a while for no fault of the code.
    """
    left = 60 - time.time() % 60
    if left < seconds:
        await asyncio.sleep(left + 0.1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A private PostgreSQL server for the whole run (``tests.postgres``)."""
    if binaries() is None:
        pytest.skip(
            "PostgreSQL tests need Debian's postgresql package (/usr/lib/postgresql/*/bin): "
            "apt-get install postgresql (.ci/run does this when it is missing)"
        )
    with cluster() as server:
        yield server


@pytest.fixture
async def database_url(postgres: Cluster) -> str:
    """The URL of a new, empty database on the private PostgreSQL server."""
    return await postgres.create_database()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The Redis of the run: ``REDIS_URL`` if set, else a private server (``tests.redis``).

    Tests sharing it keep apart by key prefixes of their own.
    """
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    with redis_server() as server:
        yield server.url
