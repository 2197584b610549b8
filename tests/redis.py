"""A private Redis for tests: Debian's ``redis-server`` on a free port of 127.0.0.1.

Never the machine's own server (one may well answer on 127.0.0.1:6379): the suite starts
one ``redis-server`` for the whole run (the ``redis_url`` fixture of tests/conftest.py),
unless ``REDIS_URL`` names a server to use instead, and stops it at the end. Tests that stop
and start Redis under running gateways start one of their own.

The server keeps nothing on disk (no snapshots, no append-only file) and runs in the
foreground as a child of the process that started it, which it does not outlive: it gets
SIGTERM when that process ends, however it ends (``PR_SET_PDEATHSIG``), so a run killed by
a timeout leaves no server behind. ``.ci/run`` installs the ``redis-server`` package when it
is missing; without it the tests that need Redis are skipped, saying so.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.deploy.procs import free_port

REDIS_SERVER = shutil.which("redis-server")
MISSING = (
    "Redis tests need Debian's redis-server package: apt-get install redis-server "
    "(.ci/run does this when it is missing), or REDIS_URL naming a server to use"
)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LIBC = ctypes.CDLL(None)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent ends (Linux)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def answers(port: int) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` child process on a port of its own, which can be stopped and started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (again) and wait until it answers PING."""
        assert REDIS_SERVER is not None, MISSING
        log = self.root / "redis.log"
        self._process = subprocess.Popen(  # noqa: S603 (the tests' own command)
            [
                *(REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                *("--dir", str(self.root), "--logfile", str(log)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # one libc call: safe between fork and exec
        )
        deadline = time.monotonic() + 10
        while not answers(self.port):
            exited = self._process.poll() is not None
            if exited or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server on port {self.port} did not answer:\n{tail}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it (SIGTERM, as an outage that closes every connection) and wait for its exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A running private Redis, stopped and its directory deleted on the way out.

    Skips the test when ``redis-server`` is not installed.
    """
    if REDIS_SERVER is None:
        pytest.skip(MISSING)
    root = Path(tempfile.mkdtemp(prefix="aichat-redis-"))
    server = RedisServer(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
