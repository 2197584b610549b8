"""Real gateway processes share one token budget through Redis and one usage history."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tests.deploy.procs import free_port, run, server_env, started
from tests.unit.test_operations_config import readme_section

TEAM_KEY = "sk-team-0123456789"
CONFIG = """
[[models]]
name = "quick"
provider = "mock"
text = "x y z"

[[keys]]
name = "team"
key_env = "TEAM_KEY"
tokens_per_day = 25
"""
HELLO = {"model": "quick", "messages": [{"role": "user", "content": "hi"}]}


async def _ask(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{url}/v1/chat/completions", json=HELLO, headers={"Authorization": f"Bearer {TEAM_KEY}"}
    ) as response:
        return response.status, await response.json()


async def test_two_replicas_share_one_token_budget_and_aichat_usage_reports_it(
    tmp_path: Path, redis_url: str
) -> None:
    (tmp_path / "aichat.toml").write_text(CONFIG)
    shared = {
        "AICHAT_CONFIG": str(tmp_path / "aichat.toml"),
        "REDIS_URL": redis_url,
        "AICHAT_REDIS_PREFIX": f"aichat-test:{uuid.uuid4().hex}:",
        "TEAM_KEY": TEAM_KEY,
        # One SQLite history for both, as gateways on one host (or --workers) share it.
        "AICHAT_USAGE_DB": str(tmp_path / "usage.db"),
    }
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    async with (
        started(
            [sys.executable, "-m", "aichat", "serve"], server_env(free_port(), **shared), one
        ) as first,
        started(
            [sys.executable, "-m", "aichat", "serve"], server_env(free_port(), **shared), two
        ) as second,
        aiohttp.ClientSession() as http,
    ):
        answers = []
        for server in (first, second, first, second):
            answers.append(await _ask(http, server.url))
            await asyncio.sleep(0.3)  # the usage write leaves right after the answer
        assert await asyncio.gather(first.stop(), second.stop()) == [0, 0]
    cost = answers[0][1]["usage"]["total_tokens"]
    assert 2 * cost < 25 <= 3 * cost, cost  # three start under the budget, the fourth not
    assert [status for status, _ in answers] == [200, 200, 200, 429], answers
    assert answers[3][1]["error"]["code"] == "insufficient_quota"
    env = server_env(0, path=str(Path(sys.executable).parent), **shared)
    listed = run(sys.executable, "-m", "aichat", "usage", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    prompt = answers[0][1]["usage"]["prompt_tokens"]
    assert row == {
        "key": "team",
        "requests": 3,
        "input_tokens": 3 * prompt,
        "output_tokens": 3 * (cost - prompt),
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": 0.0,  # the mock model is free
        "cache_saved_usd": 0.0,
    }
    table = run(sys.executable, "-m", "aichat", "usage", "--by", "model", env=env, cwd=tmp_path)
    printed = readme_section("Usage history").split("```console\n", 1)[1].splitlines()
    assert table.stdout.splitlines()[1].split() == printed[2].split()  # the README's header
    assert table.stdout.splitlines()[2].split()[:3] == ["quick", "3", str(3 * prompt)]
    csv_out = run(sys.executable, "-m", "aichat", "usage", "--csv", env=env, cwd=tmp_path)
    assert csv_out.stdout.splitlines()[1].split(",")[:3] == ["team", "3", str(3 * prompt)]


def test_aichat_usage_without_a_history_says_where_it_looked(tmp_path: Path) -> None:
    env = server_env(0, path=str(Path(sys.executable).parent))
    result = run(sys.executable, "-m", "aichat", "usage", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "aichat-usage.db" in result.stderr and "DATABASE_URL" in result.stderr
    assert not (tmp_path / "aichat-usage.db").exists()
