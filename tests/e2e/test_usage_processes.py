"""Real gateway processes share one token budget and one money budget through Redis, and one
usage history; ``aichat usage`` reports the days it is asked for, to the nano-dollar."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from aichat.operations.history_db import SqliteDatabase
from tests.deploy.procs import Server, free_port, run, server_env, started
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
# A dollar per thousand tokens, and a budget of two and a half cents a day.
MONEY_CONFIG = """
[[models]]
name = "quick"
provider = "mock"
text = "x y z"
price = { input = 1000, output = 1000 }

[[keys]]
name = "team"
key_env = "TEAM_KEY"
usd_per_day = 0.025
"""
HELLO = {"model": "quick", "messages": [{"role": "user", "content": "hi"}]}
Answer = tuple[int, dict[str, str], dict[str, Any]]


def _shared(tmp_path: Path, config: str, redis_url: str) -> dict[str, str]:
    """The environment both replicas share: config, Redis and its prefix, history."""
    (tmp_path / "aichat.toml").write_text(config)
    return {
        "AICHAT_CONFIG": str(tmp_path / "aichat.toml"),
        "REDIS_URL": redis_url,
        "AICHAT_REDIS_PREFIX": f"aichat-test:{uuid.uuid4().hex}:",
        "TEAM_KEY": TEAM_KEY,
        # One SQLite history for both, as gateways on one host (or --workers) share it.
        "AICHAT_USAGE_DB": str(tmp_path / "usage.db"),
    }


@asynccontextmanager
async def _replicas(tmp_path: Path, shared: dict[str, str]) -> AsyncIterator[list[Server]]:
    """Two gateway processes on ``shared``, each in a working directory of its own."""
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
    ):
        yield [first, second]
        assert await asyncio.gather(first.stop(), second.stop()) == [0, 0]


async def _ask_in_turn(servers: list[Server]) -> list[Answer]:
    """Four requests of the team's key, taking turns between the replicas."""
    answers = []
    async with aiohttp.ClientSession() as http:
        for server in (*servers, *servers):
            async with http.post(
                f"{server.url}/v1/chat/completions",
                json=HELLO,
                headers={"Authorization": f"Bearer {TEAM_KEY}"},
            ) as response:
                answers.append((response.status, dict(response.headers), await response.json()))
            await asyncio.sleep(0.3)  # the usage write leaves right after the answer
    return answers


async def test_two_replicas_share_one_token_budget_and_aichat_usage_reports_it(
    tmp_path: Path, redis_url: str
) -> None:
    shared = _shared(tmp_path, CONFIG, redis_url)
    async with _replicas(tmp_path, shared) as servers:
        answers = await _ask_in_turn(servers)
    cost = answers[0][2]["usage"]["total_tokens"]
    assert 2 * cost < 25 <= 3 * cost, cost  # three start under the budget, the fourth not
    assert [status for status, _, _ in answers] == [200, 200, 200, 429], answers
    assert answers[3][2]["error"]["code"] == "insufficient_quota"
    env = server_env(0, path=str(Path(sys.executable).parent), **shared)
    listed = run(sys.executable, "-m", "aichat", "usage", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    prompt = answers[0][2]["usage"]["prompt_tokens"]
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


async def test_two_replicas_share_one_money_budget(tmp_path: Path, redis_url: str) -> None:
    async with _replicas(tmp_path, _shared(tmp_path, MONEY_CONFIG, redis_url)) as servers:
        answers = await _ask_in_turn(servers)
    cost = answers[0][2]["usage"]["total_tokens"] * Decimal("0.001")
    budget = Decimal("0.025")
    assert 2 * cost < budget <= 3 * cost, cost  # three start under the budget, the fourth not
    assert [status for status, _, _ in answers] == [200, 200, 200, 429], answers
    # Each replica tells what both have spent, in dollars.
    left = [Decimal(headers["x-aichat-budget-remaining-usd-day"]) for _, headers, _ in answers]
    assert left == [budget, budget - cost, budget - 2 * cost, 0]
    _, headers, refused = answers[3]
    assert refused["error"]["code"] == "insufficient_quota"
    assert "money budget" in refused["error"]["message"]
    assert headers["x-aichat-budget-limit-usd-day"] == "0.025"
    assert headers["x-aichat-budget-reset-day"].endswith("T00:00:00Z")
    assert 0 < int(headers["Retry-After"]) <= 86400


def test_aichat_usage_without_a_history_says_where_it_looked(tmp_path: Path) -> None:
    env = server_env(0, path=str(Path(sys.executable).parent))
    result = run(sys.executable, "-m", "aichat", "usage", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "aichat-usage.db" in result.stderr and "DATABASE_URL" in result.stderr
    assert not (tmp_path / "aichat-usage.db").exists()


async def test_aichat_usage_reports_only_the_days_asked_for(tmp_path: Path) -> None:
    # requests, input, output, cache read, cache write, nano-dollars, nano-dollars saved
    gpt, claude = ("gpt-4o", "gpt-4o (openai)"), ("claude", "claude (anthropic)")
    outside = [5, 10_000, 1_000, 0, 0, 99_000_000, 0]
    seeded = {
        ("2026-11-29", "team", *gpt): outside,
        # 2,000 uncached input at $2.50 a million, 1,000 cached at $1.25, 200 output at $10.
        ("2026-11-30", "team", *gpt): [2, 3_000, 200, 1_000, 0, 8_250_000, 1_250_000],
        # 2,000 input at $3, 2,000 written to the cache at $3.75, 500 output at $15.
        ("2026-11-30", "ci", *claude): [1, 4_000, 500, 0, 2_000, 21_000_000, 0],
        ("2026-12-01", "ci", *claude): outside,
    }
    database = SqliteDatabase(tmp_path / "usage.db")
    try:
        await database.migrate()
        await database.write("seed", 1, seeded)
    finally:
        await database.close()
    env = server_env(
        0, path=str(Path(sys.executable).parent), AICHAT_USAGE_DB=str(tmp_path / "usage.db")
    )

    def usage(*args: str) -> list[str]:
        listed = run(sys.executable, "-m", "aichat", "usage", *args, env=env, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        return listed.stdout.splitlines()

    one_day = ("--since", "2026-11-30", "--until", "2026-11-30")
    assert usage(*one_day, "--by", "upstream", "--csv") == [
        "upstream,requests,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,"
        "cost_usd,cache_saved_usd",
        "claude (anthropic),1,4000,500,0,2000,0.021,0.0",  # the dearest first
        "gpt-4o (openai),2,3000,200,1000,0,0.00825,0.00125",
    ]
    assert usage(*one_day)[0] == "UTC 2026-11-30 to 2026-11-30"
    both_ends = usage("--since", "2026-11-30", "--until", "2026-12-01", "--by", "model", "--json")
    assert [json.loads(line) for line in both_ends] == [
        {
            "model": "claude",
            "requests": 6,
            "input_tokens": 14_000,
            "output_tokens": 1_500,
            "cache_read_tokens": 0,
            "cache_write_tokens": 2_000,
            "cost_usd": 0.12,
            "cache_saved_usd": 0.0,
        },
        {
            "model": "gpt-4o",
            "requests": 2,
            "input_tokens": 3_000,
            "output_tokens": 200,
            "cache_read_tokens": 1_000,
            "cache_write_tokens": 0,
            "cost_usd": 0.00825,
            "cache_saved_usd": 0.00125,
        },
    ]
