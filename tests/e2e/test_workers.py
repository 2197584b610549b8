"""``aichat serve --workers 2``: two real processes on one port, supervised as one gateway."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.deploy.procs import free_port, launched, server_env, started
from tests.e2e.test_processes import AUTH, HELLO, _config
from tests.fakes import json_events, sse_events

pytestmark = pytest.mark.slow
STREAMS = 12


def _command() -> list[str]:
    return [sys.executable, "-m", "aichat", "serve", "--workers", "2"]


def _workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def _connections_on(port: int, peer: int | None = None) -> set[int]:
    """Socket inodes of the established TCP connections whose local port is ``port`` (and
    whose remote port is ``peer``, if given)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if local == port and peer in (None, remote) and fields[3] == "01":  # ESTABLISHED
            inodes.add(int(fields[9]))
    return inodes


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _sockets_of(pid: int) -> set[int]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A systemd-like notification socket (abstract namespace) and its ``$NOTIFY_SOCKET``."""
    name = f"aichat-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(30)  # start-up on a busy machine
        yield sock, "@" + name


async def test_two_workers_share_the_port_and_drain_together_on_sigterm(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, address = notify_socket
    port = free_port()
    env = server_env(
        port, AICHAT_CONFIG=_config(tmp_path), AICHAT_DRAIN_TIMEOUT="1", NOTIFY_SOCKET=address
    )
    async with launched(_command(), env, tmp_path) as server, aiohttp.ClientSession() as http:
        # One READY=1, from the supervisor, once both workers listen.
        ready = await asyncio.to_thread(sock.recv, 4096)
        assert ready == b"READY=1", server.output()
        workers = _workers(server.process.pid)
        assert len(workers) == 2
        url = f"{server.url}/v1/chat/completions"
        body = {"model": "never", "stream": True, **HELLO}
        streams = [await http.post(url, json=body, headers=AUTH) for _ in range(STREAMS)]
        ids = set()
        for stream in streams:
            first = await stream.content.readline()
            assert await stream.content.readline() == b"\n"
            ids.add(json.loads(first.removeprefix(b"data: "))["id"])
        assert len(ids) == STREAMS  # forked workers do not repeat each other's ids
        # Each connection is served by exactly one worker, and both got some.
        open_connections = _connections_on(port)
        served = [len(_sockets_of(worker) & open_connections) for worker in workers]
        assert sum(served) == STREAMS
        assert all(served), served

        server.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(sock.recv, 4096) == b"STOPPING=1"
        for stream in streams:
            raw = await stream.read()
            assert "[DONE]" not in sse_events(raw), server.output()
            assert json_events(raw)[-1]["error"]["code"] == "server_shutting_down"
        assert await asyncio.wait_for(server.process.wait(), 15) == 0, server.output()
        assert not any(_running(worker) for worker in workers)


async def test_a_taken_port_is_refused_and_a_dead_worker_stops_the_gateway(
    tmp_path: Path,
) -> None:
    env = server_env(free_port(), AICHAT_CONFIG=_config(tmp_path))
    async with started(_command(), env, tmp_path) as server:
        # SO_REUSEPORT would let a second gateway join this one's port without a word.
        other = tmp_path / "other"
        other.mkdir()
        async with launched(_command(), env, other) as second:
            assert await asyncio.wait_for(second.process.wait(), 30) == 1
            assert "the port is in use by another process" in second.output()
        first, survivor = _workers(server.process.pid)
        os.kill(first, signal.SIGKILL)
        assert await asyncio.wait_for(server.process.wait(), 15) == 1, server.output()
        assert f"worker {first} exited unexpectedly" in server.output()
        assert not _running(survivor)
