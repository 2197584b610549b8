"""Several real gateway processes behind the nginx of docker-compose.yml's ``lb``, on loopback.

The nginx configuration is compose's own, rendered for loopback ports: its one
``server aichat:8001`` line becomes one line per replica, ``listen 8001`` a loopback port,
and Docker's resolver goes. Everything else is used as written. A small main configuration
around it adds what a test needs to know: for every request, which replicas nginx tried.

Requests carry an ``X-Load-Id`` header; nginx logs it with the replicas it tried and their
statuses, so a test can tell where each request ended up after any retries.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.files import compose_lb_config
from tests.deploy.procs import API_KEY, free_port
from tests.soak.chaos import Broken, read_stream

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
COMPOSE_SERVER = "server aichat:8001"
COMPOSE_LISTEN = "listen 8001;"
_LOG_LINE = re.compile(r'(\S+) (\d+) "([^"]*)" "([^"]*)"')  # the ``tried`` log format


def render_for_loopback(conf: str, listen: int, replicas: Sequence[int]) -> str:
    """``conf`` with the replicas on 127.0.0.1 ports instead of Docker's service name.

    Fails if the lines it replaces are not there exactly once, so a change to compose's
    configuration cannot silently leave the test running something else.
    """
    out: list[str] = []
    replaced = {"server": 0, "listen": 0, "resolver": 0}
    for line in conf.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        text = line.strip()
        if text.startswith("resolver "):
            replaced["resolver"] += 1  # Docker's DNS; fixed loopback ports need no resolver
        elif text.startswith(COMPOSE_SERVER):
            replaced["server"] += 1
            # The same parameters, but for `resolve`: fixed addresses need no re-resolving.
            params = [
                p for p in text.removeprefix(COMPOSE_SERVER).rstrip(";").split() if p != "resolve"
            ]
            out += [f"{indent}server 127.0.0.1:{port} {' '.join(params)};" for port in replicas]
        elif text == COMPOSE_LISTEN:
            replaced["listen"] += 1
            out.append(f"{indent}listen 127.0.0.1:{listen};")
        else:
            out.append(line)
    assert replaced == {"server": 1, "listen": 1, "resolver": 1}, replaced
    return "\n".join(out) + "\n"


def _main_config(workdir: Path, site: Path) -> str:
    temp = " ".join(
        f"{kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
# Workers run as the test's own user, so they can reach the test's temporary directory.
user {getpass.getuser()};
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} info;
events {{ worker_connections 512; }}
http {{
    log_format tried '$http_x_load_id $status "$upstream_addr" "$upstream_status"';
    access_log {workdir / "access.log"} tried;
    {temp}
    include {site};
}}
"""


@dataclass(frozen=True)
class Route:
    """Where nginx sent one request: every replica tried, in order, and what each answered."""

    status: int
    tried: tuple[str, ...]
    statuses: tuple[str, ...]

    @property
    def replica(self) -> str:
        """The address of the replica that gave the final answer."""
        return self.tried[-1]


@dataclass
class Nginx:
    """A running nginx and its files."""

    process: asyncio.subprocess.Process
    url: str
    workdir: Path

    def routes(self) -> dict[str, Route]:
        """Every logged request with an ``X-Load-Id``, by that id."""
        found = {}
        for line in (self.workdir / "access.log").read_text().splitlines():
            logged = _LOG_LINE.fullmatch(line)
            assert logged, line
            load_id, status, tried, statuses = logged.groups()
            if load_id != "-":
                found[load_id] = Route(
                    int(status), tuple(tried.split(", ")), tuple(statuses.split(", "))
                )
        return found

    def errors(self) -> str:
        """nginx's error log (for assertion messages)."""
        return (self.workdir / "error.log").read_text(errors="replace")


async def _wait_listening(port: int, process: asyncio.subprocess.Process, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert process.returncode is None, "exited before it listened"
            assert time.monotonic() < deadline, f"nothing listens on {port} after {within}s"
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return


def _write_configs(workdir: Path, replicas: Sequence[int]) -> tuple[int, Path]:
    """The configuration files in ``workdir``: the port nginx will listen on, the main file."""
    workdir.mkdir()
    port = free_port()
    site = workdir / "lb.conf"
    site.write_text(render_for_loopback(compose_lb_config(), port, replicas))
    main = workdir / "nginx.conf"
    main.write_text(_main_config(workdir, site))
    return port, main


@asynccontextmanager
async def nginx(workdir: Path, replicas: Sequence[int]) -> AsyncIterator[Nginx]:
    """compose's ``lb`` configuration in a real nginx, in front of ``replicas``' ports."""
    assert NGINX, "nginx is not installed"
    port, main = _write_configs(workdir, replicas)
    with (workdir / "stderr.log").open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *(NGINX, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(main)),
            stdout=out,
            stderr=out,
        )
    server = Nginx(process, f"http://127.0.0.1:{port}", workdir)
    try:
        await _wait_listening(port, process, 10)
        yield server
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGQUIT)  # graceful: let workers finish
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


@dataclass
class Replica:
    """One ``aichat serve`` process on a fixed loopback port, stopped and started at will."""

    port: int
    env: dict[str, str]
    workdir: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        """How nginx names this replica in its log."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The replica's own URL, bypassing nginx."""
        return f"http://{self.address}"

    async def start(self) -> None:
        """Start the process (its output is appended to ``server.log``)."""
        self.workdir.mkdir(exist_ok=True)
        with (self.workdir / "server.log").open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "aichat", "serve"),
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=out,
            )

    async def wait_ready(self, http: aiohttp.ClientSession, within: float = 30.0) -> None:
        """Poll ``/ready`` until it answers 200."""
        assert self.process is not None
        deadline = time.monotonic() + within
        while True:
            try:
                async with http.get(f"{self.url}/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert self.process.returncode is None, f"replica exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"not ready in {within}s:\n{self.output()}"
            await asyncio.sleep(0.05)

    async def stop(self, how: signal.Signals, within: float = 20.0) -> int:
        """Send ``how`` and wait for the exit code."""
        assert self.process is not None
        self.process.send_signal(how)
        return await asyncio.wait_for(self.process.wait(), within)

    async def close(self) -> None:
        """Stop the process if it runs: gracefully, or killed if that takes too long."""
        if self.running:
            try:
                await self.stop(signal.SIGTERM)
            except TimeoutError:
                await self.stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.returncode is None

    def output(self) -> str:
        """Everything the process printed, over all its restarts."""
        return (self.workdir / "server.log").read_text(errors="replace")

    async def metrics(
        self, http: aiohttp.ClientSession
    ) -> dict[tuple[str, tuple[str, ...]], float]:
        """This replica's ``/metrics`` samples, by name and label values."""
        async with http.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            text = await response.text()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


@dataclass
class Outcome:
    """What one request through the balancer came to, as its client saw it."""

    load_id: str
    stream: bool
    started: float
    status: int = 0
    failure: str | None = None  # None: a complete answer with exactly the expected text
    done: bool = False  # a stream's client received [DONE]
    error: BaseException | None = None  # what the client library raised, if anything


async def ask(
    http: aiohttp.ClientSession,
    url: str,
    load_id: str,
    stream: bool,
    expected: str,
    key: str = API_KEY,
) -> Outcome:
    """One chat completion through ``url``, judged: complete and exact, or how it failed."""
    outcome = Outcome(load_id, stream, time.monotonic())
    body = {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}", "X-Load-Id": load_id}
    received = bytearray()
    try:
        async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
            outcome.status = resp.status
            async for data in resp.content.iter_any():
                received += data
    except aiohttp.ClientError as exc:
        outcome.error = exc
        outcome.failure = f"{type(exc).__name__}: {exc}"
        outcome.done = b"data: [DONE]" in received  # must never be, before a failure
        return outcome
    raw = bytes(received)
    if outcome.status != 200:
        outcome.failure = f"status {outcome.status}: {raw[:200]!r}"
    elif stream:
        try:
            text, last = read_stream(raw)
        except Broken as exc:
            outcome.failure = str(exc)
        else:
            outcome.done = last == "[DONE]"
            if not outcome.done or text != expected:
                outcome.failure = f"stream ended {last[:200]!r} with text {text!r}"
    else:
        text = json.loads(raw)["choices"][0]["message"]["content"]
        if text != expected:
            outcome.failure = f"whole answer {text!r}"
    return outcome


@dataclass
class Load:
    """Steady traffic through the balancer: ``workers`` clients, each asking in turn for a
    stream and a whole answer, until ``stop`` is called."""

    http: aiohttp.ClientSession
    url: str
    expected: str
    name: str
    workers: int = 6
    outcomes: list[Outcome] = field(default_factory=list)
    in_flight: set[str] = field(default_factory=set)  # ids of the requests not answered yet
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        """Start every worker."""
        self._tasks = [asyncio.create_task(self._worker(n)) for n in range(self.workers)]

    async def stop(self) -> list[Outcome]:
        """Let every request in flight finish, start no more; every outcome."""
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes

    async def _worker(self, worker: int) -> None:
        n = 0
        while not self._stopping.is_set():
            load_id = f"{self.name}-{worker}-{n}"
            self.in_flight.add(load_id)
            self.outcomes.append(
                await ask(self.http, self.url, load_id, n % 2 == worker % 2, self.expected)
            )
            self.in_flight.discard(load_id)
            n += 1


def failures(outcomes: Iterable[Outcome]) -> list[str]:
    """A line for every outcome that was not a complete, exact answer."""
    return [f"{o.load_id}: {o.failure}" for o in outcomes if o.failure]
