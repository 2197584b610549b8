"""The ``Type=notify`` contract, over real AF_UNIX datagram sockets like systemd's own."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aichat.healthcheck import check
from aichat.operations import sdnotify
from tests.deploy.files import ROOT
from tests.deploy.procs import free_port, launched, server_env


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer than that.
    with tempfile.TemporaryDirectory(prefix="aichat-") as name:
        yield Path(name)


def _listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10)
    return sock


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[socket.socket]:
    """A listening notification socket; ``$NOTIFY_SOCKET`` holds its address as systemd writes
    it: a path, or ``@name`` for Linux's abstract namespace."""
    if request.param == "path":
        value = str(short_dir / "notify")
        sock = _listener(value)
    else:
        name = f"aichat-test-{secrets.token_hex(8)}"
        value = "@" + name
        sock = _listener("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    with sock:
        yield sock


def test_notify_sends_the_state_as_one_datagram(notify_socket: socket.socket) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=listening")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=listening"


def test_notify_without_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify("READY=1")


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/path"])
def test_notify_ignores_addresses_that_are_not_unix_sockets(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert not sdnotify.notify("READY=1")


def test_a_vanished_socket_is_logged_not_raised(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "gone"))
    assert not sdnotify.notify("READY=1")
    assert "could not notify systemd" in caplog.text


async def test_server_says_ready_once_listening_and_stopping_on_sigterm(
    notify_socket: socket.socket, short_dir: Path
) -> None:
    # PYTHONPATH: the child runs this source tree, whatever else is installed.
    env = server_env(free_port(), NOTIFY_SOCKET=os.environ["NOTIFY_SOCKET"], PYTHONPATH=str(ROOT))
    async with launched([sys.executable, "-m", "aichat", "serve"], env, short_dir) as server:
        ready = await asyncio.to_thread(notify_socket.recv, 4096)
        assert ready == b"READY=1", server.output()
        # READY=1 promises a socket that accepts: systemd starts dependants on it. No retry.
        assert await asyncio.to_thread(check, f"{server.url}/health")
        assert await server.stop() == 0, server.output()
        assert await asyncio.to_thread(notify_socket.recv, 4096) == b"STOPPING=1"
