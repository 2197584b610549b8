"""``aichat serve --workers 2`` without Redis counts and reports as one gateway: a key's token
budget, rate limit and concurrency limit hold exactly as with one process, and every
``/metrics`` scrape shows the whole gateway's totals, whichever worker answers it.

Every request goes on a connection of its own, so the kernel spreads them over both workers.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.procs import Server, free_port, server_env, started

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
    async with started(command, env, tmp_path) as server:
        yield server


async def _post(server: Server, key: str, body: dict[str, object]) -> aiohttp.ClientResponse:
    """A request on a new connection (its worker chosen anew), its body read."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        response = await http.post(
            f"{server.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {KEYS[key]}"},
        )
        await response.read()
        return response


async def test_two_workers_spend_one_token_budget(gateway: Server) -> None:
    statuses = []
    for _ in range(8):
        response = await _post(gateway, "BUDGET_KEY", {"model": "long", **HELLO})
        statuses.append(response.status)
        if response.status == 429:
            assert (await response.json())["error"]["code"] == "insufficient_quota"
    # One process admits the first answer (nothing spent yet), then refuses: it took ~256.
    assert statuses == [200] + [429] * 7, gateway.output()


async def test_two_workers_hold_one_rate_limit(gateway: Server) -> None:
    if 60 - time.time() % 60 < 10:  # keep every request inside one one-minute window
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    statuses = [
        (await _post(gateway, "RATE_KEY", {"model": "long", **HELLO})).status for _ in range(10)
    ]
    assert statuses == [200] * 5 + [429] * 5, gateway.output()


async def test_two_workers_hold_one_concurrency_limit(gateway: Server) -> None:
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) for _ in range(4)
    ]
    url = f"{gateway.url}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {KEYS['STREAMS_KEY']}"}
    body = {"model": "never", "stream": True, **HELLO}
    try:
        streams = [await http.post(url, json=body, headers=headers) for http in sessions]
        assert [stream.status for stream in streams] == [200, 200, 429, 429], gateway.output()
        streams[0].close()  # its slot is given back once its worker sees the client gone
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (await _post(gateway, "STREAMS_KEY", {"model": "long", **HELLO})).status == 429:
            assert loop.time() < deadline, gateway.output()
            await asyncio.sleep(0.1)
        # Still one slot held by the second stream: a third at once is refused again.
        third = await sessions[2].post(url, json=body, headers=headers)
        fourth = await sessions[3].post(url, json=body, headers=headers)
        assert sorted([third.status, fourth.status]) == [200, 429], gateway.output()
    finally:
        for http in sessions:
            await http.close()


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_every_scrape_shows_the_whole_gateway_and_never_goes_down(
    gateway: Server,
) -> None:
    previous: dict[tuple[tuple[str, str], ...], float] = {}
    for made in range(1, 13):
        assert (await _post(gateway, "PLAIN_KEY", {"model": "long", **HELLO})).status == 200
        for _ in range(2):
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
                http.get(f"{gateway.url}/metrics") as scrape,
            ):
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
    async with started(command, env, tmp_path) as server:
        # Three failed requests, wherever they land, open the gateway's one circuit.
        for _ in range(3):
            failed = await _post(server, "PLAIN_KEY", {"model": "down", **HELLO})
            assert failed.status >= 500
            assert "Retry-After" not in failed.headers, server.output()  # it was tried
        for _ in range(6):
            refused = await _post(server, "PLAIN_KEY", {"model": "down", **HELLO})
            assert refused.status == 503, server.output()
            assert int(refused.headers["Retry-After"]) > 500  # not tried: the circuit is open
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
                http.get(f"{server.url}/ready?verbose=1") as ready,
            ):
                (upstream,) = (await ready.json())["upstreams"]
            assert upstream["state"] == "open"
            assert upstream["consecutive_failures"] == 3
