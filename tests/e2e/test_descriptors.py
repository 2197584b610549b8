"""Descriptors: a real gateway process under a low limit on open files, as systemd's default
soft limit of 1,024 is, against idle connections that re-open as soon as they are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from aichat.operations.connections import GRACE
from tests.deploy.procs import API_KEY, Server, free_port, server_env, started

MOCKS = """
[[models]]
name = "quick"
provider = "mock"
text = "fine"

"""
# 256 descriptors: 64 of them kept for the process, 192 for connections and upstreams.
MOST = 192


def _limited(soft: int, hard: int) -> list[str]:
    """``aichat serve`` under a limit of ``soft`` (``hard``) open files."""
    code = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
        "os.execv(sys.executable, [sys.executable, '-m', 'aichat', 'serve'])"
    )
    return [sys.executable, "-c", code]


@asynccontextmanager
async def _gateway(tmp_path: Path, soft: int, hard: int) -> AsyncIterator[Server]:
    config = tmp_path / "aichat.toml"
    config.write_text(MOCKS)
    env = server_env(free_port(), AICHAT_CONFIG=str(config), AICHAT_HEADER_TIMEOUT="60")
    async with started(_limited(soft, hard), env, tmp_path) as server:
        yield server


def _open_files_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return " ".join(line.split()[3:5])
    raise AssertionError("no open files limit")


async def _metrics(server: Server, http: aiohttp.ClientSession) -> dict[str, float]:
    for _ in range(50):  # until the connections closed last are gone, and one gets in
        async with http.get(f"{server.url}/metrics") as answer:
            text = await answer.text()
            if answer.status == 200:
                break
        await asyncio.sleep(0.1)
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("aichat_connections_shed_total", "aichat_client_connections"))
    }


async def _idle_forever(server: Server, stop: asyncio.Event) -> None:
    """A connection that sends nothing, re-opened as soon as the gateway closes it."""
    port = int(server.url.rsplit(":", 1)[1])
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        with contextlib.suppress(OSError):
            closed = asyncio.ensure_future(reader.read())
            await asyncio.wait(
                {closed, asyncio.ensure_future(stop.wait())}, return_when="FIRST_COMPLETED"
            )
            closed.cancel()
        writer.close()
        await asyncio.sleep(0.01)


async def _crowd_in_and_idle(server: Server, crowd_size: int) -> None:
    """Wait until the gateway holds ``crowd_size`` connections, then until all are idle: a
    loaded machine accepts a crowd slowly, and newcomers that come while it is still in its
    grace find nothing to close."""
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            if (await _metrics(server, http)).get("aichat_client_connections", 0) >= crowd_size:
                break
            await asyncio.sleep(0.1)
    await asyncio.sleep(GRACE + 0.2)


async def _answers_among_idle_crowd(server: Server, crowd_size: int) -> int:
    """How many of 48 requests, each on a new connection, are answered while ``crowd_size``
    idle connections re-open as soon as they are closed."""
    stop = asyncio.Event()
    crowd = [asyncio.create_task(_idle_forever(server, stop)) for _ in range(crowd_size)]
    body = {"model": "quick", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    answered = 0
    try:
        await _crowd_in_and_idle(server, crowd_size)
        for _ in range(48):
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as http:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with (
                        asyncio.timeout(5),
                        http.post(
                            f"{server.url}/v1/chat/completions", json=body, headers=headers
                        ) as answer,
                    ):
                        answered += answer.status == 200
    finally:
        stop.set()
        await asyncio.gather(*crowd, return_exceptions=True)
    return answered


async def _uploading(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection in the middle of a request: its head sent, its body not yet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
    )
    await writer.drain()
    return reader, writer


async def test_the_soft_limit_on_open_files_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    # 1,100 such connections under systemd's soft limit of 1,024 left a real client 5
    # answers of 48; the hard limit (524,288 by default) had room for all of them.
    async with _gateway(tmp_path, 256, 4096) as server:
        assert _open_files_limit(server.process.pid) == "4096 4096"
        assert await _answers_among_idle_crowd(server, 300) == 48, server.output()


async def test_idle_connections_give_way_to_clients_with_requests(tmp_path: Path) -> None:
    # No room to raise: past 64 connections (256 less what upstreams and the process need),
    # each newcomer closes the longest idle ones.
    async with _gateway(tmp_path, 256, 256) as server:
        assert await _answers_among_idle_crowd(server, 120) == 48, server.output()
        async with aiohttp.ClientSession() as http:
            metrics = await _metrics(server, http)
    assert metrics['aichat_connections_shed_total{action="idle_closed"}'] > 0
    assert metrics['aichat_connections_shed_total{action="refused"}'] == 0


async def test_past_the_limit_with_none_to_close_a_connection_gets_a_cheap_503(
    tmp_path: Path,
) -> None:
    async with _gateway(tmp_path, 256, 256) as server:
        port = int(server.url.rsplit(":", 1)[1])
        # Newcomers, none of them idle: each sends a request head at once and keeps its body
        # coming (as an upload does), so that however slowly a loaded machine accepts them,
        # there is none to close. They are let in while the descriptors kept for upstreams
        # last (192 of 256), then refused.
        crowd = [await _uploading(port) for _ in range(MOST)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        crowd.append((reader, writer))
        async with asyncio.timeout(5):
            refused = await reader.read()
        for _, writer in crowd:
            writer.close()
        head, _, payload = refused.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), refused
        assert b"\r\nRetry-After: 1\r\n" in head
        assert json.loads(payload)["error"]["code"] == "server_overloaded"
        async with aiohttp.ClientSession() as http:
            metrics = await _metrics(server, http)
    assert metrics['aichat_connections_shed_total{action="refused"}'] >= 1
