"""Arize Phoenix as the real trace receiver: started once per test run, on 127.0.0.1 only.

Phoenix is large (about 650 MB installed), so it has a venv of its own beside the project's
(``.venv/phoenix``, installed by ``make test`` with a pinned version and reused while that
version matches). It starts in 20 to 80 seconds; the tests share one instance, keeping its
data in a temporary directory, and tell their spans apart by trace id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy.procs import free_port

PYTHON = Path(sys.prefix) / "phoenix" / "bin" / "python"
LAUNCHER = Path(__file__).with_name("phoenix_loopback.py")
START_WITHIN = 180.0  # seconds; measured 20-80 s on a busy 2-core machine


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback URL)
        return json.loads(response.read())


@dataclass
class Phoenix:
    """A running Phoenix: where it takes OTLP/HTTP, and its process."""

    url: str
    grpc_port: int
    process: subprocess.Popen[bytes]
    started_in: float  # seconds from launch to answering

    def spans(self, trace_id: str, count: int, within: float = 30.0) -> list[dict[str, Any]]:
        """The spans of ``trace_id``, once Phoenix has stored at least ``count`` of them."""
        deadline = time.monotonic() + within
        while True:
            spans: list[dict[str, Any]] = _get(
                f"{self.url}/v1/projects/default/spans?trace_id={trace_id}&limit=100"
            )["data"]
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.25)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Phoenix stopped (SIGSTOP): connections are accepted by the kernel, never answered."""
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)


@contextmanager
def running_phoenix(work_dir: Path) -> Iterator[Phoenix]:
    """Start Phoenix on free loopback ports with its data in ``work_dir``; stop it after."""
    port, grpc_port = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work_dir),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(work_dir),
        # Nothing leaves the machine: no usage telemetry, no fonts or scripts from elsewhere.
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    }
    log_path = work_dir / "phoenix.log"
    url = f"http://127.0.0.1:{port}"
    launched = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(  # noqa: S603 (the tests' own command)
            [str(PYTHON), "-I", str(LAUNCHER)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=2).close()  # noqa: S310
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            waited = time.monotonic() - launched
            if process.poll() is not None or waited > START_WITHIN:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Phoenix did not start in {waited:.0f} s:\n{tail}")
            time.sleep(0.5)
        yield Phoenix(url, grpc_port, process, time.monotonic() - launched)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
