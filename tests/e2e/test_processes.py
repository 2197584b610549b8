"""Real gateway processes: SIGTERM drains honestly; replicas share limits through Redis;
a start-up failure is one line and a non-zero exit."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from tests.deploy.procs import API_KEY, free_port, run, server_env, started
from tests.fakes import json_events, sse_events

AUTH = {"Authorization": f"Bearer {API_KEY}"}
HELLO = {"messages": [{"role": "user", "content": "hi"}]}
MOCKS = """
[[models]]
name = "quick"
provider = "mock"
text = "x y z"
tokens_per_second = 20

[[models]]
name = "never"
provider = "mock"
text = "{endless}"
tokens_per_second = 5
""".replace("{endless}", "a " * 1000)


def _config(tmp_path: Path) -> str:
    path = tmp_path / "aichat.toml"
    path.write_text(MOCKS)
    return str(path)


def _command() -> list[str]:
    return [sys.executable, "-m", "aichat", "serve"]


async def test_sigterm_drains_then_ends_open_streams_and_exits_0(tmp_path: Path) -> None:
    env = server_env(free_port(), AICHAT_CONFIG=_config(tmp_path), AICHAT_DRAIN_TIMEOUT="1")
    async with started(_command(), env, tmp_path) as server, aiohttp.ClientSession() as http:
        url = f"{server.url}/v1/chat/completions"
        quick = await http.post(url, json={"model": "quick", "stream": True, **HELLO}, headers=AUTH)
        endless = await http.post(
            url, json={"model": "never", "stream": True, **HELLO}, headers=AUTH
        )
        assert (await endless.content.readline()).startswith(b"data: ")
        assert await endless.content.readline() == b"\n"  # the role event is out
        server.process.send_signal(15)
        await asyncio.sleep(0.2)
        ready = await http.get(f"{server.url}/ready")
        assert ready.status == 503
        assert sse_events(await quick.read())[-1] == "[DONE]"
        raw = await endless.read()
        assert "[DONE]" not in sse_events(raw), server.output()
        assert json_events(raw)[-1]["error"]["code"] == "server_shutting_down"
        assert await asyncio.wait_for(server.process.wait(), 10) == 0, server.output()


async def test_two_replicas_share_one_limit_through_redis(tmp_path: Path, redis_url: str) -> None:
    if 60 - time.time() % 60 < 5:  # keep all requests inside one rate window
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    shared = {
        "AICHAT_CONFIG": _config(tmp_path),
        "REDIS_URL": redis_url,
        "AICHAT_REDIS_PREFIX": f"aichat-test:{uuid.uuid4().hex}:",
        "AICHAT_RATE_LIMIT_RPM": "5",
    }
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    async with (
        started(_command(), server_env(free_port(), **shared), one) as first,
        started(_command(), server_env(free_port(), **shared), two) as second,
        aiohttp.ClientSession() as http,
    ):
        statuses = []
        for i in range(10):
            server = (first, second)[i % 2]
            resp = await http.post(
                f"{server.url}/v1/chat/completions", json={"model": "quick", **HELLO}, headers=AUTH
            )
            statuses.append(resp.status)
        assert statuses.count(200) == 5, statuses
        assert statuses.count(429) == 5, statuses
        assert statuses[:5] == [200] * 5


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


async def test_the_tokenizer_is_loaded_at_start_only_where_a_route_counts(tmp_path: Path) -> None:
    """~140 MB: an OpenAI-only gateway never loads it, a mock or aichats one before serving."""
    openai_only = tmp_path / "openai.toml"
    openai_only.write_text(
        '[[models]]\nname = "up"\nprovider = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    rss = {}
    for name, config in (("openai", str(openai_only)), ("mock", _config(tmp_path))):
        (tmp_path / name).mkdir()
        env = server_env(free_port(), AICHAT_CONFIG=config)
        async with started(_command(), env, tmp_path / name) as server:
            rss[name] = _rss_mb(server.process.pid)
    # The README's figure for memory at rest, genai-prices' table included (the route is
    # priced from it).
    assert rss["openai"] < 66, rss
    assert rss["mock"] > rss["openai"] + 100, rss  # loaded before the first request


def _one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a start that failed, checked to be just that."""
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1, result.stderr  # no traceback, no log lines
    return result.stderr


def test_busy_port_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(*_command(), env=server_env(port), cwd=tmp_path, timeout=30)
    err = _one_line_failure(result)
    assert err.startswith(f"aichat: cannot listen on 127.0.0.1:{port}: the port is in use")
    assert "--port / AICHAT_PORT" in err
