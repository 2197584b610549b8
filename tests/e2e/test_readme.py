"""The README's quick start and configuration examples, run as printed, in the README's order.

A fenced block preceded by an HTML comment ``<!-- runnable: ... -->`` is run:

- ``<!-- runnable: file NAME -->``: the block is saved as ``NAME`` in the working directory;
- ``<!-- runnable: server -->``: a shell command that serves; the previous server is stopped,
  this one started and waited for on ``/health``;
- ``<!-- runnable: NAME -->``: a command of the user's second shell (bash, or python run with
  that shell's environment); ``CHECKS[NAME]`` judges its output and the README's claims
  around it. A runnable block without a check, or a check without its block, fails the test.

Only what a test machine needs differs from a user's machine: the working directory is a
temporary one holding a ``.venv`` link to this checkout's virtualenv and a ``make`` that reads
this checkout's Makefile without reinstalling; the port is a free one, not 8001; and
``AICHATS_BASE_URL`` points at a fake aichats on 127.0.0.1, so no traffic leaves the machine.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shutil
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from aichat.healthcheck import check
from tests.conftest import _start
from tests.deploy.procs import free_port, run
from tests.fakes import FakeAichats, json_events, sse_events

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
DEMO_TEXT = "Hello from the mock provider."
_BLOCK = re.compile(
    r"<!-- runnable: (?P<marker>[^>]*?) -->\n```(?P<lang>\w+)\n(?P<body>.*?)\n```", re.DOTALL
)


@dataclass(frozen=True)
class Block:
    """One runnable block: what the marker says, its language and its text."""

    marker: str
    lang: str
    body: str


def runnable_blocks(text: str) -> list[Block]:
    """Every block marked runnable in ``text``, in order."""
    return [Block(m["marker"].strip(), m["lang"], m["body"]) for m in _BLOCK.finditer(text)]


@dataclass
class Output:
    """What a client block printed."""

    stdout: str
    stderr: str


@dataclass
class Walk:
    """The user's machine for the walk: working directory, port, upstream and server."""

    workdir: Path
    port: int
    fake_url: str
    fake_runner: web.AppRunner | None
    server: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def server_output(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")

    def key(self) -> str:
        line = (self.workdir / ".env").read_text().strip()
        return line.removeprefix("APP_SECRET=")

    def as_printed(self, body: str) -> str:
        return body.replace("127.0.0.1:8001", f"127.0.0.1:{self.port}").replace(
            "AICHAT_PORT=8001", f"AICHAT_PORT={self.port}"
        )

    def env(self, body: str = "") -> dict[str, str]:
        """The user's environment; the address only where ``body`` does not set it itself."""
        address = {"AICHAT_HOST": "127.0.0.1", "AICHAT_PORT": str(self.port)}
        return {
            "PATH": f"{self.workdir / 'bin'}:{ROOT / '.venv' / 'bin'}:{os.defpath}",
            "HOME": str(self.workdir),
            **{var: value for var, value in address.items() if f"{var}=" not in body},
            "AICHATS_BASE_URL": self.fake_url,
            "NO_PROXY": "127.0.0.1,localhost",
        }

    async def upstream_gone(self) -> None:
        """The fake aichats stops: its port refuses connections from now on."""
        if self.fake_runner is not None:
            await self.fake_runner.cleanup()
            self.fake_runner = None

    async def start_server(self, body: str) -> None:
        await self.stop_server()
        log = (self.workdir / "server.log").open("wb")
        with log:
            self.server = await asyncio.create_subprocess_exec(
                "bash",
                "-euc",
                self.as_printed(body),
                cwd=self.workdir,
                env=self.env(body),
                stdout=log,
                stderr=log,
                start_new_session=True,  # make and the gateway it runs: stopped together
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await asyncio.to_thread(check, f"{self.url}/health", 1.0):
            assert self.server.returncode is None, self.server_output()
            assert loop.time() < deadline, self.server_output()
            await asyncio.sleep(0.1)

    async def stop_server(self) -> None:
        if self.server is None:
            return
        if self.server.returncode is None:
            os.killpg(self.server.pid, signal.SIGINT)  # Ctrl-C: to make and the gateway
            await asyncio.wait_for(self.server.wait(), 15)
        output = self.server_output()
        assert "shutting down" in output
        assert "Traceback" not in output, output
        self.server = None

    async def client(self, block: Block) -> Output:
        """Run ``block`` in the second shell: variables it exports stay for the next ones."""
        state = self.workdir / "shell-state"
        command = 'python -c "$1"' if block.lang == "python" else block.body.rstrip()
        script = f'if [ -f "{state}" ]; then source "{state}"; fi\n{command}\nexport -p > "{state}"'
        result = await asyncio.to_thread(
            run,
            "bash",
            "-euc",
            self.as_printed(script),
            "client",
            self.as_printed(block.body),
            cwd=self.workdir,
            env=self.env(),
            timeout=60,
        )
        assert result.returncode == 0, (result.stdout, result.stderr, self.server_output())
        return Output(result.stdout, result.stderr)


def _streamed_text(stdout: str) -> str:
    events = json_events(stdout.encode())
    return "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")
    )


async def check_first_curl(walk: Walk, out: Output) -> None:
    """The quick-start stream, then "What to expect" with the upstream out of reach."""
    assert sse_events(out.stdout.encode())[-1] == "[DONE]"
    assert _streamed_text(out.stdout) == "Hello, world!"
    upstream = walk.fake_url.removeprefix("http://")
    await walk.upstream_gone()
    auth = {"Authorization": f"Bearer {walk.key()}"}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            resp = await http.post(f"{walk.url}/v1/chat/completions", json=body, headers=auth)
            assert resp.status == 502
            error = (await resp.json())["error"]
            assert error["message"].startswith(
                f"aichats upstream unreachable: cannot connect to {upstream} (Connection refused)"
            )
        resp = await http.post(f"{walk.url}/v1/chat/completions", json=body, headers=auth)
        assert resp.status == 503
        error = (await resp.json())["error"]
        assert error["code"] == "upstream_unavailable"
        assert f"cannot connect to {upstream}" in error["message"]
        assert 0 < int(resp.headers["Retry-After"]) <= 30
        ready = await (await http.get(f"{walk.url}/ready?verbose=1")).json()
    assert ready["upstreams"][0]["state"] == "open"
    failed = [line for line in walk.server_output().splitlines() if "attempt failed" in line]
    assert failed
    assert all(f"cannot connect to {upstream}" in line for line in failed)
    assert "circuit opened: requests skip this upstream" in walk.server_output()


async def check_demo_curl(walk: Walk, out: Output) -> None:
    assert json.loads(out.stdout)["choices"][0]["message"]["content"] == DEMO_TEXT


async def check_sdk_chat(walk: Walk, out: Output) -> None:
    assert out.stdout == f"{DEMO_TEXT}\n{DEMO_TEXT}"


async def check_sdk_responses(walk: Walk, out: Output) -> None:
    assert out.stdout == f"{DEMO_TEXT}\n"


async def check_sdk_anthropic(walk: Walk, out: Output) -> None:
    assert out.stdout == DEMO_TEXT


async def check_messages_curl(walk: Walk, out: Output) -> None:
    # Anthropic's framing: an ``event:`` line before each ``data:`` line.
    data = [line[6:] for line in out.stdout.splitlines() if line.startswith("data: ")]
    events = [json.loads(payload) for payload in data]
    assert events[-1]["type"] == "message_stop"
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text == DEMO_TEXT


async def check_config_show(walk: Walk, out: Output) -> None:
    shown = json.loads(out.stdout)
    assert "models" not in shown  # the file's routes replace AICHAT_MODELS
    names = [route["name"] for route in shown["routes"]]
    assert names == [
        "gpt-4o",
        "local-llama",
        "demo",
        "demo-broken",
        "gpt-4o-tools",
        "claude",
        "codex",
    ]
    claude, codex = shown["routes"][-2:]
    assert (claude["provider"], claude["anthropic_version"]) == ("anthropic", "2023-06-01")
    assert claude["headers"] == {"anthropic-beta": "context-1m-2025-08-07"}
    assert claude["prompt_caching"] == "auto"
    assert shown["routes"][1]["context_fallbacks"] == ["claude"]
    assert (codex["provider"], codex["api"]) == ("openai", "responses")
    assert "LLAMA_KEY is not set" in out.stderr


async def check_broken_curl(walk: Walk, out: Output) -> None:
    assert "[DONE]" not in sse_events(out.stdout.encode())
    events = json_events(out.stdout.encode())
    assert events[-1]["error"]["code"] == "upstream_error"
    assert _streamed_text(out.stdout) == "This answer breaks"
    # The README's example starts with LLAMA_KEY unset: a warning naming it, not an error.
    assert "LLAMA_KEY is not set" in walk.server_output()


def printed_after(marker: str) -> str:
    """The block the README prints after the runnable block ``marker``: its output."""
    text = README.read_text()
    start = text.index("```\n", text.index(f"<!-- runnable: {marker} -->")) + 4
    begin = text.index("\n", text.index("```", start)) + 1
    return text[begin : text.index("\n```", begin) + 1]


async def check_agent_env_claude(walk: Walk, out: Output) -> None:
    assert out.stdout == walk.as_printed(printed_after("agent-env-claude"))
    assert out.stderr == ""  # local-llama's window is known: no note


async def check_agent_env_codex(walk: Walk, out: Output) -> None:
    assert out.stdout == walk.as_printed(printed_after("agent-env-codex"))
    # The catalog that config.toml names answers with the window the block carries.
    auth = {"Authorization": f"Bearer {walk.key()}"}
    async with aiohttp.ClientSession() as http:
        listed = await http.get(f"{walk.url}/v1/models?client_version=0.171.0", headers=auth)
        catalog = {entry["slug"]: entry for entry in (await listed.json())["models"]}
    assert catalog["local-llama"]["context_window"] == 8192
    assert "context_window" not in catalog["demo"]


CHECKS: dict[str, Callable[[Walk, Output], Awaitable[None]]] = {
    "first-curl": check_first_curl,
    "demo-curl": check_demo_curl,
    "sdk-chat": check_sdk_chat,
    "sdk-responses": check_sdk_responses,
    "sdk-anthropic": check_sdk_anthropic,
    "messages-curl": check_messages_curl,
    "config-show": check_config_show,
    "broken-curl": check_broken_curl,
    "agent-env-claude": check_agent_env_claude,
    "agent-env-codex": check_agent_env_codex,
}


def test_every_runnable_block_has_a_check_and_every_check_a_block() -> None:
    blocks = runnable_blocks(README.read_text())
    clients = [
        b.marker for b in blocks if b.marker != "server" and not b.marker.startswith("file ")
    ]
    assert sorted(clients) == sorted(CHECKS)
    assert {b.lang for b in blocks} <= {"bash", "toml", "python"}


def test_the_sdk_examples_say_what_to_install_first() -> None:
    text = README.read_text()
    imported: set[str] = set()
    for block in runnable_blocks(text):
        if block.lang == "python":
            for node in ast.walk(ast.parse(block.body)):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    imported.add(node.module.split(".")[0])
    installs = re.findall(r"`pip install ([a-z0-9 _-]+)`", " ".join(text.split()))
    named = {package for line in installs for package in line.split()}
    assert imported - set(sys.stdlib_module_names) == {"openai", "anthropic"}
    assert {"openai", "anthropic"} <= named
    first_sdk = text.index("<!-- runnable: sdk-")
    assert " ".join(text[:first_sdk].split()).count("`pip install openai anthropic`") == 1


def test_make_env_writes_a_random_key_readable_by_its_owner_only(tmp_path: Path) -> None:
    _checkout(tmp_path)
    result = run("make", ".env", cwd=tmp_path, env={"PATH": f"{tmp_path / 'bin'}:{os.defpath}"})
    assert result.returncode == 0, result.stderr
    env_file = tmp_path / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert re.fullmatch(r"APP_SECRET=sk-aichat-[\w-]{32}\n", env_file.read_text())


def _checkout(workdir: Path) -> None:
    """``workdir`` as a fresh clone looks to ``make run`` after its first install."""
    make = shutil.which("make")
    if make is None or shutil.which("curl") is None:
        pytest.skip("the quick start needs make and curl")
    (workdir / ".venv").symlink_to(ROOT / ".venv")
    shim = workdir / "bin" / "make"
    shim.parent.mkdir()
    # This checkout's Makefile, its venv taken as installed (no pip, no network).
    shim.write_text(f'#!/bin/sh\nexec {make} -f {ROOT / "Makefile"} -o .venv/.installed "$@"\n')
    shim.chmod(0o755)


# Three gateway starts and a dozen client processes: about 20 s on an idle machine.
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_readme_quick_start_and_configuration_as_printed(tmp_path: Path) -> None:
    _checkout(tmp_path)
    fake_runner, fake_url = await _start(FakeAichats().app())
    walk = Walk(tmp_path, free_port(), fake_url, fake_runner)
    ran: list[str] = []
    try:
        for block in runnable_blocks(README.read_text()):
            if block.marker.startswith("file "):
                (tmp_path / block.marker.removeprefix("file ")).write_text(block.body + "\n")
            elif block.marker == "server":
                await walk.start_server(block.body)
                if not ran:  # `make run`: a private key file, and how to use the key
                    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
                    assert "export $(grep '^APP_SECRET=' .env)" in walk.server_output()
            else:
                await CHECKS[block.marker](walk, await walk.client(block))
            ran.append(block.marker)
    finally:
        await walk.stop_server()
        await walk.upstream_gone()
    assert ran.count("server") == 3, ran
