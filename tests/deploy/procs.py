"""Run a real aichat process (installed command, executable, ``python -m aichat``) in a test."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aichat.healthcheck import check

API_KEY = "sk-deploy-test-0123456789"


def run(
    *command: str | Path, timeout: float = 60, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command the test itself spells out, capturing its text output; never raises on exit."""
    return subprocess.run(  # noqa: S603 (the tests' own commands, no user input)
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(port: int, path: str = os.defpath, **extra: str) -> dict[str, str]:
    """A minimal environment for a gateway on 127.0.0.1:``port``, as a container would give it.

    Nothing is inherited from the test run, so no stray ``AICHAT_*`` variable changes the result.
    """
    return {
        "PATH": path,
        "APP_SECRET": API_KEY,
        "AICHAT_HOST": "127.0.0.1",
        "AICHAT_PORT": str(port),
        "NO_PROXY": "127.0.0.1,localhost",
        **extra,
    }


@dataclass
class Server:
    """A started gateway process and where it listens."""

    process: asyncio.subprocess.Process
    url: str
    log: Path

    def output(self) -> str:
        """Everything the process printed so far (for assertion messages)."""
        return self.log.read_text(errors="replace")

    async def stop(self, grace: float = 10.0) -> int:
        """SIGTERM, as ``docker stop`` and ``systemctl stop`` send it; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), grace)


async def wait_healthy(server: Server, within: float) -> None:
    """Poll ``/health`` until it answers 200; fail early if the process dies."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await asyncio.to_thread(check, f"{server.url}/health", 1.0):
        assert server.process.returncode is None, f"server exited:\n{server.output()}"
        assert loop.time() < deadline, f"no /health within {within}s:\n{server.output()}"
        await asyncio.sleep(0.1)


@asynccontextmanager
async def launched(
    command: Sequence[str], env: Mapping[str, str], workdir: Path
) -> AsyncIterator[Server]:
    """Start ``command`` in ``workdir`` (where no ``.env`` lies), output to a log file there.

    ``TMPDIR`` is ``workdir`` unless ``env`` says otherwise: the gateway's PID file lies there,
    so one the test kills leaves none behind. The process is killed on the way out if the
    test did not stop it.
    """
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *command, env={"TMPDIR": str(workdir), **env}, cwd=workdir, stdout=out, stderr=out
        )
    try:
        yield Server(process, f"http://127.0.0.1:{env['AICHAT_PORT']}", log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def wait_all_workers(server: Server, workers: int, within: float) -> None:
    """Wait for the supervisor's word that all ``workers`` listen: until then the kernel gives
    every connection to those that do, and one that is still starting answers nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while f"all {workers} workers ready" not in server.output():
        assert server.process.returncode is None, f"server exited:\n{server.output()}"
        assert loop.time() < deadline, f"not all workers ready in {within}s:\n{server.output()}"
        await asyncio.sleep(0.1)


@asynccontextmanager
async def started(
    command: Sequence[str],
    env: Mapping[str, str],
    workdir: Path,
    ready_within: float = 30.0,
    workers: int = 1,
) -> AsyncIterator[Server]:
    """:func:`launched`, once ``/health`` answers and, for ``--workers``, every worker listens."""
    async with launched(command, env, workdir) as server:
        await wait_healthy(server, ready_within)
        if workers > 1:
            await wait_all_workers(server, workers, ready_within)
        yield server
