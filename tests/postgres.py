"""A private PostgreSQL server for tests: Debian's binaries, its own data directory and port.

Never the machine's own server: each run initialises a cluster in a fresh directory, listens
on a free port of 127.0.0.1 only, with ``fsync`` off (a test cluster is thrown away), and is
stopped at the end. Run as root (CI), the server runs as Debian's ``postgres`` user, since
PostgreSQL refuses to run as root. ``.ci/run`` installs the ``postgresql`` package when it
is missing; without it the tests that need the server are skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.deploy.procs import free_port

BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
USER = "aichat"


def binaries() -> Path | None:
    """The newest installed PostgreSQL's binary directory."""
    return BINARIES[-1].parent if BINARIES else None


@dataclass
class Cluster:
    """A running private server."""

    root: Path
    port: int
    bin: Path

    @property
    def url(self) -> str:
        """The URL of its ``postgres`` database."""
        return self.database("postgres")

    def database(self, name: str) -> str:
        """The URL of database ``name`` on this server."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def _ctl(self, *args: str) -> None:
        _run(self.root, str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), *args)

    def start(self) -> None:
        """Start it (again), waiting until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-l", str(self.root / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop it at once (connections are cut, as in an outage)."""
        self._ctl("-m", "immediate", "-w", "stop")

    async def create_database(self) -> str:
        """A new empty database's URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        return self.database(name)


def _run(root: Path, *command: str) -> None:
    """``command``, as the ``postgres`` user when this is root."""
    if os.geteuid() == 0:
        command = ("runuser", "-u", "postgres", "--", *command)
    result = subprocess.run(  # noqa: S603 (the tests' own commands)
        command, capture_output=True, text=True, timeout=60, check=False, cwd=root
    )
    if result.returncode:
        log = root / "server.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"{command[-1]} failed: {result.stderr}\n{tail}")


@contextmanager
def cluster() -> Iterator[Cluster]:
    """A fresh server, stopped and deleted on the way out."""
    found = binaries()
    assert found is not None
    root = Path(tempfile.mkdtemp(prefix="aichat-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = Cluster(root, free_port(), found)
    try:
        _run(
            root,
            str(found / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            USER,
            "-A",
            "trust",
            "--no-sync",
        )
        server.start()
        yield server
    finally:
        if (root / "data" / "postmaster.pid").exists():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
