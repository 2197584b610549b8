"""``aichat serve --workers 2`` without Redis counts and reports as one gateway: a key's token
budget, rate limit and concurrency limit hold exactly as with one process, and every
``/metrics`` scrape shows the whole gateway's totals, whichever worker answers it.

The tests choose the worker each request goes to, rather than trusting the kernel to spread
them: a connection is opened (and asked for ``/health``, which counts nothing) until the
kernel gives it to the wanted worker, then kept open for that worker's requests. So one
worker's answers are always checked against what the other one counted.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.procs import Server, free_port, server_env, started
from tests.e2e.test_workers import _connections_on, _sockets_of, _workers

pytestmark = pytest.mark.slow

KEYS = {"BUDGET_KEY": "sk-budget-0123456789", "RATE_KEY": "sk-rate-0123456789"}
KEYS |= {"STREAMS_KEY": "sk-streams-0123456789", "PLAIN_KEY": "sk-plain-0123456789"}
CONFIG = """
[[models]]
name = "long"
provider = "mock"
text = "{long}"

[[models]]
name = "never"
provider = "mock"
text = "{long}"
tokens_per_second = 2

[[keys]]
name = "budget"
key_env = "BUDGET_KEY"
tokens_per_day = 200

[[keys]]
name = "rate"
key_env = "RATE_KEY"
requests_per_minute = 5

[[keys]]
name = "streams"
key_env = "STREAMS_KEY"
max_concurrent = 2

[[keys]]
name = "plain"
key_env = "PLAIN_KEY"
""".replace("{long}", "a " * 255)  # about 256 tokens
HELLO = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Server]:
    """A gateway of two workers on the configuration above, without Redis."""
    config = tmp_path / "aichat.toml"
    config.write_text(CONFIG)
    env = server_env(free_port(), AICHAT_CONFIG=str(config), AICHAT_WORKERS="2", **KEYS)
    command = [sys.executable, "-m", "aichat", "serve"]
    async with started(command, env, tmp_path, workers=2) as server:
        yield server


@dataclass
class Pinned:
    """A kept-open connection that the kernel gave to one worker."""

    server: Server
    worker: int  # its PID
    http: aiohttp.ClientSession  # one connection at a time, each from ``port``
    port: int

    def held(self) -> bool:
        """Whether the worker holds the gateway's end of the connection now."""
        gateway_port = int(self.server.url.rsplit(":", 1)[1])
        return bool(_connections_on(gateway_port, self.port) & _sockets_of(self.worker))

    async def send(self, method: str, path: str, **options: Any) -> aiohttp.ClientResponse:
        """A request to the worker: its response, body unread."""
        response = await self.http.request(method, f"{self.server.url}{path}", **options)
        assert self.held(), f"the connection is no longer the worker's:\n{self.server.output()}"
        return response

    async def post(self, key: str, body: dict[str, object]) -> aiohttp.ClientResponse:
        """A chat completion for ``key``, its body read (the connection free again)."""
        response = await self.send(
            "POST",
            "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEYS[key]}"},
        )
        await response.read()
        return response


async def _pinned(server: Server, worker: int) -> Pinned:
    """A connection to ``worker`` (a PID): new ones until the kernel gives one to it."""
    for _ in range(64):  # each goes to either worker: 2**-64 that none reaches it
        port = free_port()
        connector = aiohttp.TCPConnector(limit=1, local_addr=("127.0.0.1", port))
        pinned = Pinned(server, worker, aiohttp.ClientSession(connector=connector), port)
        async with pinned.http.get(f"{server.url}/health") as health:
            assert health.status == 200, server.output()
            await health.read()
        if pinned.held():
            return pinned
        await pinned.http.close()
    raise AssertionError(f"no connection reached worker {worker}")


@asynccontextmanager
async def _alternating(server: Server, count: int) -> AsyncIterator[list[Pinned]]:
    """``count`` connections: to the first worker, the second, the first, ..."""
    workers = _workers(server.process.pid)
    assert len(workers) == 2
    connections: list[Pinned] = []
    try:
        for i in range(count):
            connections.append(await _pinned(server, workers[i % 2]))
        yield connections
    finally:
        for connection in connections:
            await connection.http.close()


@pytest.fixture
async def pinned(gateway: Server) -> AsyncIterator[list[Pinned]]:
    """Four connections: to the first worker, the second, the first, the second."""
    async with _alternating(gateway, 4) as connections:
        yield connections


async def test_two_workers_spend_one_token_budget(gateway: Server, pinned: list[Pinned]) -> None:
    statuses = []
    for i in range(8):  # alternately to each worker
        response = await pinned[i % 2].post("BUDGET_KEY", {"model": "long", **HELLO})
        statuses.append(response.status)
        if response.status == 429:
            assert (await response.json())["error"]["code"] == "insufficient_quota"
    # One process admits the first answer (nothing spent yet), then refuses: it took ~256.
    # The second worker refuses too, having answered nothing itself.
    assert statuses == [200] + [429] * 7, gateway.output()


async def test_two_workers_hold_one_rate_limit(gateway: Server, pinned: list[Pinned]) -> None:
    if 60 - time.time() % 60 < 10:  # keep every request inside one one-minute window
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    statuses = [
        (await pinned[i % 2].post("RATE_KEY", {"model": "long", **HELLO})).status for i in range(10)
    ]
    # Five each: two processes counting apart would have admitted all ten.
    assert statuses == [200] * 5 + [429] * 5, gateway.output()


async def test_two_workers_hold_one_concurrency_limit(
    gateway: Server, pinned: list[Pinned]
) -> None:
    headers = {"Authorization": f"Bearer {KEYS['STREAMS_KEY']}"}
    body = {"model": "never", "stream": True, **HELLO}
    # One stream on each worker, then one more on each: both refused, the gateway's two
    # slots being taken (each worker alone holds only one).
    streams = [
        await connection.send("POST", "/v1/chat/completions", json=body, headers=headers)
        for connection in pinned
    ]
    assert [stream.status for stream in streams] == [200, 200, 429, 429], gateway.output()
    for refused in streams[2:]:
        await refused.read()
    streams[0].close()  # its slot is given back once the first worker sees the client gone
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    # Asked of the first worker, whose link then carries this request's release before the
    # next one's question: the freed slot is taken and given back, in that order.
    while (await pinned[2].post("STREAMS_KEY", {"model": "long", **HELLO})).status == 429:
        assert loop.time() < deadline, gateway.output()
        await asyncio.sleep(0.1)
    # One slot free, one held by the second worker's stream: a third stream is admitted,
    # and a fourth, from the second worker, refused.
    third = await pinned[2].send("POST", "/v1/chat/completions", json=body, headers=headers)
    fourth = await pinned[3].send("POST", "/v1/chat/completions", json=body, headers=headers)
    assert [third.status, fourth.status] == [200, 429], gateway.output()


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_every_scrape_shows_the_whole_gateway_and_never_goes_down(
    gateway: Server, pinned: list[Pinned]
) -> None:
    previous: dict[tuple[tuple[str, str], ...], float] = {}
    for made in range(1, 13):
        answered = await pinned[made % 2].post("PLAIN_KEY", {"model": "long", **HELLO})
        assert answered.status == 200
        for connection in pinned[:2]:  # each worker scraped after each request
            async with await connection.send("GET", "/metrics") as scrape:
                assert scrape.status == 200
                text = await scrape.text()
            requests = _samples(text, "aichat_requests_total")
            assert (
                requests[(("model", "long"), ("status", "200"), ("upstream", "long (mock)"))]
                == made
            )
            buckets = _samples(text, "aichat_request_duration_seconds_count")
            assert buckets[(("model", "long"),)] == made
            tokens = _samples(text, "aichat_tokens_total")
            assert all(value >= previous.get(labels, 0) for labels, value in tokens.items())
            previous = tokens
            up = _samples(text, "aichat_worker_up")
            assert up == {(("worker", "0"),): 1, (("worker", "1"),): 1}


async def test_a_circuit_opened_in_one_worker_is_open_in_both(tmp_path: Path) -> None:
    config = tmp_path / "aichat.toml"
    # An upstream nothing listens on: every attempt fails at once, retried never.
    config.write_text(
        f'[[models]]\nname = "down"\nprovider = "openai"\n'
        f'base_url = "http://127.0.0.1:{free_port()}/v1"\napi_key_env = "UPSTREAM_KEY"\n'
        '[[keys]]\nname = "plain"\nkey_env = "PLAIN_KEY"\n'
    )
    env = server_env(
        free_port(),
        AICHAT_CONFIG=str(config),
        AICHAT_WORKERS="2",
        AICHAT_RETRIES="0",
        AICHAT_BREAKER_FAILURES="3",
        AICHAT_BREAKER_COOLDOWN="600",
        UPSTREAM_KEY="sk-upstream",
        **KEYS,
    )
    command = [sys.executable, "-m", "aichat", "serve"]
    async with (
        started(command, env, tmp_path, workers=2) as server,
        _alternating(server, 2) as workers,
    ):
        # Two failed requests on the first worker, one on the second: neither saw three,
        # the gateway did, and its one circuit opens.
        for connection in [*workers, workers[0]]:
            failed = await connection.post("PLAIN_KEY", {"model": "down", **HELLO})
            assert failed.status >= 500
            assert "Retry-After" not in failed.headers, server.output()  # it was tried
        # The supervisor sends the change to both workers (a notice: moments later).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        for connection in workers:
            while (await _upstream(connection))["state"] != "open":
                assert loop.time() < deadline, server.output()
                await asyncio.sleep(0.05)
        for i in range(6):
            refused = await workers[i % 2].post("PLAIN_KEY", {"model": "down", **HELLO})
            assert refused.status == 503, server.output()
            assert int(refused.headers["Retry-After"]) > 500  # not tried: the circuit is open
            upstream = await _upstream(workers[i % 2])
            assert upstream["state"] == "open"
            assert upstream["consecutive_failures"] == 3


async def _upstream(connection: Pinned) -> dict[str, Any]:
    """The one upstream's circuit as this connection's worker reports it."""
    async with await connection.send("GET", "/ready?verbose=1") as ready:
        (upstream,) = (await ready.json())["upstreams"]
        state: dict[str, Any] = upstream
        return state
