"""The real coding agents, a real gateway process and scripted upstreams, all on 127.0.0.1.

``npm ci`` installs the pinned CLIs from ``package-lock.json`` into ``node_modules`` here,
only when that folder is missing or older than the lock file. One gateway process serves the
whole module, with one model per upstream kind; a recorder sits between the agents and it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from tests.agents.recorder import Recorder
from tests.agents.upstream import AgentAichats, AgentAnthropic, AgentOpenAI, AgentResponses
from tests.deploy.procs import Server, free_port, run, server_env, started

HERE = Path(__file__).resolve().parent
MODULES = HERE / "node_modules"
NPM = shutil.which("npm")
NODE = shutil.which("node")
# Every model the agents may ask for, by upstream kind; the mock answers this text.
MOCK_TEXT = "Hello from the mock model."
MODELS = {
    "mock": "agent-mock",
    "openai": "agent-openai",
    "aichats": "agent-aichats",
    "anthropic": "agent-anthropic",
    "responses": "agent-responses",
}
# What the native routes call their models upstream (the agents never see these names).
UPSTREAM_MODELS = {"anthropic": "claude-sonnet-4-5", "responses": "gpt-5-codex"}
# No agent run may take longer than this, whatever it waits for.
RUN_TIMEOUT = 120.0


@dataclass(frozen=True)
class Clis:
    """How to start each agent."""

    claude: Path
    codex: tuple[str, ...]
    versions: dict[str, str]


def _installed() -> bool:
    marker = MODULES / ".package-lock.json"  # npm writes it on every install
    return (
        marker.is_file() and marker.stat().st_mtime >= (HERE / "package-lock.json").stat().st_mtime
    )


def _claude_binary() -> Path:
    """The native binary of the platform package.

    npm's postinstall copies it over the wrapper's ``bin/claude.exe`` placeholder; where
    install scripts did not run, the placeholder is not a program, so the platform package
    (the one npm picked for this OS, CPU and libc) is used directly.
    """
    found = sorted((MODULES / "@anthropic-ai").glob("claude-code-*/claude"))
    if not found:
        pytest.fail(f"no native claude binary under {MODULES}/@anthropic-ai (npm ci incomplete?)")
    return found[0]


def _version(lock_name: str) -> str:
    lock = json.loads((HERE / "package-lock.json").read_text())
    version: str = lock["packages"][f"node_modules/{lock_name}"]["version"]
    return version


@pytest.fixture(scope="session")
def clis() -> Clis:
    """The pinned CLIs, installed when needed; skipped only where Node.js is missing."""
    if NPM is None or NODE is None:
        pytest.skip("node and npm are not installed: tests/agents run the npm-packaged CLIs")
    if not _installed():
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
        install = run(NPM, "ci", "--no-audit", "--no-fund", cwd=HERE, env=env, timeout=300)
        assert install.returncode == 0, f"npm ci failed:\n{install.stdout}\n{install.stderr}"
    codex = (NODE, str(MODULES / "@openai" / "codex" / "bin" / "codex.js"))
    versions = {
        "claude": _version("@anthropic-ai/claude-code"),
        "codex": _version("@openai/codex"),
    }
    return Clis(_claude_binary(), codex, versions)


def _config(openai_url: str, aichats_url: str, anthropic_url: str, responses_url: str) -> str:
    return f"""
[[models]]
name = "{MODELS["mock"]}"
provider = "mock"
text = "{MOCK_TEXT}"

[[models]]
name = "{MODELS["openai"]}"
provider = "openai"
base_url = "{openai_url}/v1"

[[models]]
name = "{MODELS["aichats"]}"
provider = "aichats"
base_url = "{aichats_url}"
emulate_tools = true

[[models]]
name = "{MODELS["anthropic"]}"
provider = "anthropic"
base_url = "{anthropic_url}"
upstream_model = "{UPSTREAM_MODELS["anthropic"]}"

[[models]]
name = "{MODELS["responses"]}"
provider = "openai"
api = "responses"
base_url = "{responses_url}/v1"
upstream_model = "{UPSTREAM_MODELS["responses"]}"
"""


@dataclass
class Stack:
    """The gateway process, the upstreams behind it and the recorder in front of it."""

    server: Server
    recorder: Recorder
    openai: AgentOpenAI
    aichats: AgentAichats
    anthropic: AgentAnthropic
    responses: AgentResponses
    url: str  # the recorder's: where the agents are pointed

    def _access_lines(self, since: int) -> list[dict[str, Any]]:
        with self.server.log.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("logger") == "aichat.access"]

    async def access_lines(self, since: int, at_least: int) -> list[dict[str, Any]]:
        """The access log lines written after byte ``since``, once ``at_least`` are there.

        A line is written just after its answer's last byte: an agent can be done before it.
        """
        for _ in range(200):  # 10 seconds at most
            lines = self._access_lines(since)
            if len(lines) >= at_least:
                break
            await asyncio.sleep(0.05)
        return lines

    def log_size(self) -> int:
        """How many bytes the gateway has written so far."""
        return self.server.log.stat().st_size


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@asynccontextmanager
async def recorded_gateway(
    config: str, workdir: Path
) -> AsyncIterator[tuple[Server, Recorder, str]]:
    """A gateway process serving ``config`` (TOML), a recorder in front of it, and the
    recorder's URL: where agents are pointed."""
    (workdir / "aichat.toml").write_text(config)
    env = server_env(free_port(), os.environ["PATH"], AICHAT_LOG_FORMAT="json")
    command = [sys.executable, "-m", "aichat", "serve", "--config", str(workdir / "aichat.toml")]
    async with started(command, env, workdir) as server, aiohttp.ClientSession() as session:
        recorder = Recorder(server.url, session)
        recorder_runner, recorder_url = await _serve(recorder.app())
        try:
            yield server, recorder, recorder_url
        finally:
            await recorder_runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """One gateway process for the module, between the recorder and the scripted upstreams."""
    workdir = tmp_path_factory.mktemp("gateway")
    openai, aichats = AgentOpenAI(), AgentAichats()
    anthropic, responses = AgentAnthropic(), AgentResponses()
    runners, urls = [], []
    for fake in (openai, aichats, anthropic, responses):
        runner, url = await _serve(fake.app())
        runners.append(runner)
        urls.append(url)
    try:
        async with recorded_gateway(_config(*urls), workdir) as (server, recorder, url):
            yield Stack(server, recorder, openai, aichats, anthropic, responses, url)
    finally:
        for runner in runners:
            await runner.cleanup()


@dataclass
class Run:
    """One finished agent run."""

    returncode: int
    stdout: str
    stderr: str

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines the agent printed (its streamed events)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def report(self) -> str:
        """Both outputs, for assertion messages."""
        return f"exit {self.returncode}\n--- stdout\n{self.stdout[-6000:]}\n--- stderr\n{self.stderr[-6000:]}"


async def run_agent(command: list[str], env: dict[str, str], cwd: Path) -> Run:
    """Run an agent with stdin closed, killing it after ``RUN_TIMEOUT`` seconds."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)  # the agent and the commands it started
        stdout, stderr = await process.communicate()
        return Run(
            -9,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace") + "\n(killed: timeout)",
        )
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
