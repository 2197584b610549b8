"""Start, pin and stop the processes under test, all on 127.0.0.1.

Core layout on a 2-core machine: the gateway alone on core 0; the fake upstream, the load
generator and this driver on core 1. With fewer cores nothing is pinned (and the report says
so): the numbers are then only comparable with runs on the same machine. The workers
scenario gives the gateway two cores (``WORKERS_CORES``) and the load generator every other
core, or all of them when there are no others (``workers_tools_cores``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

GATEWAY_CORE = 0
TOOLS_CORE = 1
WORKERS_CORES = (0, 1)
# Read before ``pin_self`` narrows this process to one core.
_CORES = os.sched_getaffinity(0)
Cores = int | tuple[int, ...]


def can_pin() -> bool:
    """Whether the gateway and the tools can each get a core of their own."""
    return shutil.which("taskset") is not None and {GATEWAY_CORE, TOOLS_CORE} <= _CORES


def workers_tools_cores() -> tuple[int, ...]:
    """Where the load generator runs in the workers scenario: on the cores the two workers
    do not have, or (on a 2-core machine) on every core, sharing them with the workers."""
    others = tuple(sorted(_CORES - set(WORKERS_CORES)))
    return others or tuple(sorted(_CORES))


def pinned(cmd: Sequence[str], cores: Cores) -> list[str]:
    """``cmd`` run on ``cores`` when pinning is possible, else unchanged."""
    if not can_pin():
        return list(cmd)
    listed = ",".join(map(str, cores)) if isinstance(cores, tuple) else str(cores)
    return ["taskset", "-c", listed, *cmd]


def pin_self() -> None:
    """Move this driver onto the tools' core so it never competes with the gateway."""
    if can_pin():
        os.sched_setaffinity(0, {TOOLS_CORE})


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proc:
    """A started process, its log file and the URL it answers on."""

    name: str
    popen: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        """Process id (``taskset`` execs its command, so this is the server itself)."""
        return self.popen.pid

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL: never leave it running."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def log_tail(self, lines: int = 15) -> str:
        """The end of the process's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start(
    name: str,
    cmd: Sequence[str],
    *,
    core: Cores,
    url: str,
    log_dir: Path,
    env: dict[str, str] | None = None,
    stdout: int | IO[bytes] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start ``cmd`` pinned to ``core`` (one or several); output to ``log_dir/<name>.log``."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    popen = subprocess.Popen(  # noqa: S603 (argv built here, no shell)
        pinned(cmd, core),
        env={**os.environ, **(env or {})},
        stdout=stdout if stdout is not None else log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the driver must not kill servers mid-request
        cwd=cwd,
    )
    return Proc(name, popen, url, log_path)


def wait_http(proc: Proc, path: str, timeout: float) -> None:
    """Poll ``GET url+path`` until it answers 200; raise with the log tail if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            break
        try:
            with urllib.request.urlopen(proc.url + path, timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"{proc.name} did not become ready:\n{proc.log_tail()}")


def start_upstream(log_dir: Path) -> Proc:
    """The fake upstream on the tools' core; it reports its port on its first output line."""
    cmd = [sys.executable, "-m", "bench.upstream", "--port", "0"]
    proc = start("upstream", cmd, core=TOOLS_CORE, url="", log_dir=log_dir, stdout=subprocess.PIPE)
    assert proc.popen.stdout is not None
    line = proc.popen.stdout.readline()
    if not line:
        proc.stop()
        raise RuntimeError(f"fake upstream failed to start:\n{proc.log_tail()}")
    proc.url = f"http://127.0.0.1:{json.loads(line)['port']}"
    wait_http(proc, "/health", 10)
    return proc


def run_loadgen(
    spec: dict[str, object], timeout: float, cores: Cores = TOOLS_CORE
) -> list[dict[str, object]]:
    """One load-generator process on the tools' core (or ``cores``); its JSON results."""
    done = subprocess.run(  # noqa: S603 (argv built here, no shell)
        pinned([sys.executable, "-m", "bench.loadgen"], cores),
        input=json.dumps(spec).encode(),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        errors = done.stderr.decode(errors="replace").strip()
        last = errors.splitlines()[-1] if errors else f"exit code {done.returncode}"
        raise RuntimeError(f"load generator failed: {last}\n{errors[-2000:]}")
    results: list[dict[str, object]] = json.loads(done.stdout)
    return results
