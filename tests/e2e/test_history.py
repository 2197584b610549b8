"""The usage history: real gateway processes writing to SQLite and to PostgreSQL, complete and exact.

Every answer's usage comes back to the client too, so what the history must hold is known
exactly: the sum of what the clients were told, priced at the route's own rates.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from aichat.operations.history import Row, utc_day
from aichat.operations.history_db import MIGRATIONS, PostgresDatabase, SqliteDatabase
from tests.deploy.procs import Server, free_port, server_env, started
from tests.postgres import binaries, cluster

KEYS = {"team": "sk-team-0123456789", "ci": "sk-ci-0123456789abc"}
CONFIG = """
[[models]]
name = "quick"
provider = "mock"
text = "one two three four"
price = { input = 1.5, output = 6, cache_read = 0.75 }

[[keys]]
name = "team"
key_env = "TEAM_KEY"

[[keys]]
name = "ci"
key_env = "CI_KEY"
"""
SERVE = [sys.executable, "-m", "aichat", "serve"]
Totals = dict[str, Counter[str]]


def gateway_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a gateway serving ``CONFIG`` (without a port)."""
    config = tmp_path / "aichat.toml"
    config.write_text(CONFIG)
    return {"AICHAT_CONFIG": str(config), "TEAM_KEY": KEYS["team"], "CI_KEY": KEYS["ci"], **extra}


async def ask(http: aiohttp.ClientSession, server: Server, key: str, words: int) -> dict[str, int]:
    """One answer for ``key`` with a prompt of ``words`` words; the usage the client was told."""
    body = {"model": "quick", "messages": [{"role": "user", "content": "hi " * words}]}
    headers = {"Authorization": f"Bearer {KEYS[key]}"}
    async with http.post(f"{server.url}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        usage: dict[str, int] = (await r.json())["usage"]
        return usage


def add(totals: Totals, key: str, usage: dict[str, int]) -> None:
    """Count ``usage`` for ``key`` as the history should: tokens, and cost at CONFIG's prices."""
    counts = totals.setdefault(key, Counter())
    counts["requests"] += 1
    counts["input_tokens"] += usage["prompt_tokens"]
    counts["output_tokens"] += usage["completion_tokens"]
    counts["cost_nano_usd"] += usage["prompt_tokens"] * 1500 + usage["completion_tokens"] * 6000


async def traffic(server: Server, totals: Totals, per_key: int) -> None:
    """``per_key`` requests of each key at once, of varied sizes, counted into ``totals``."""
    async with aiohttp.ClientSession() as http:
        jobs = [(key, n % 7 + 1) for key in KEYS for n in range(per_key)]
        answers = await asyncio.gather(*(ask(http, server, key, words) for key, words in jobs))
    for (key, _), usage in zip(jobs, answers, strict=True):
        add(totals, key, usage)


def held(rows: list[Row]) -> Totals:
    """What the history holds per key, over every day read."""
    found: Totals = {}
    for row in rows:
        assert (row.model, row.upstream) == ("quick", "quick (mock)")
        counts = found.setdefault(row.key, Counter())
        for name in ("requests", "input_tokens", "output_tokens", "cost_nano_usd"):
            counts[name] += getattr(row, name)
    return found


def days() -> tuple[str, str]:
    """Yesterday and today (UTC): a test may run across midnight."""
    now = time.time()
    return utc_day(now - 86400), utc_day(now)


async def test_one_gateway_keeps_its_history_in_sqlite_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "usage.db"
    path.parent.mkdir()
    env = gateway_env(tmp_path, AICHAT_USAGE_DB=str(path))
    totals: Totals = {}
    for run, per_key in enumerate((6, 4)):
        workdir = tmp_path / f"run{run}"
        workdir.mkdir()
        async with started(SERVE, server_env(free_port(), **env), workdir) as server:
            await traffic(server, totals, per_key)
            assert await server.stop() == 0, server.output()
    database = SqliteDatabase(path)
    try:
        assert held(await database.read(*days())) == totals
    finally:
        await database.close()
    assert totals["team"]["requests"] == 10


async def test_two_gateways_write_to_one_postgresql_at_once(
    tmp_path: Path, database_url: str
) -> None:
    env = gateway_env(tmp_path, DATABASE_URL=database_url)
    totals: Totals = {}
    workdirs = [tmp_path / "one", tmp_path / "two"]
    for workdir in workdirs:
        workdir.mkdir()
    async with (
        started(SERVE, server_env(free_port(), **env), workdirs[0]) as first,
        started(SERVE, server_env(free_port(), **env), workdirs[1]) as second,
    ):
        await asyncio.gather(*(traffic(server, totals, 25) for server in (first, second)))
        # Both stop at once, each writing what it has left while the other does.
        codes = await asyncio.gather(first.stop(), second.stop())
        assert codes == [0, 0], first.output() + second.output()
    database = PostgresDatabase(database_url)
    try:
        assert held(await database.read(*days())) == totals
    finally:
        await database.close()
    assert totals["ci"]["requests"] == 50


async def metric(http: aiohttp.ClientSession, server: Server, name: str) -> float:
    async with http.get(f"{server.url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name}")


@pytest.mark.skipif(binaries() is None, reason="needs Debian's postgresql package")
async def test_a_database_outage_fails_no_request_and_loses_nothing(tmp_path: Path) -> None:
    with cluster() as server_db:
        database_url = await server_db.create_database()
        server_db.stop()  # down before the gateway even starts
        env = gateway_env(tmp_path, DATABASE_URL=database_url)
        totals: Totals = {}
        async with started(SERVE, server_env(free_port(), **env), tmp_path) as gateway:
            await traffic(gateway, totals, 5)  # every answer arrives: see `ask`
            async with aiohttp.ClientSession() as http:
                await asyncio.sleep(1.5)  # a write or two fail meanwhile
                assert await metric(http, gateway, "aichat_usage_history_write_failures_total") >= 1
                assert await metric(http, gateway, "aichat_usage_history_unwritten_requests") == 10
                server_db.start()
                for _ in range(100):
                    if not await metric(http, gateway, "aichat_usage_history_unwritten_requests"):
                        break
                    await asyncio.sleep(0.1)
            assert "usage history" in gateway.output()  # the failures were logged
            await traffic(gateway, totals, 2)
            assert await gateway.stop() == 0
        database = PostgresDatabase(database_url)
        try:
            assert held(await database.read(*days())) == totals
        finally:
            await database.close()


async def test_a_batch_written_twice_counts_once_and_migrating_again_changes_nothing(
    tmp_path: Path, database_url: str
) -> None:
    day = utc_day(time.time())
    rows = {(day, "team", "quick", "quick (mock)"): [1, 10, 5, 2, 0, 45_000, 1_500]}
    for database in (SqliteDatabase(tmp_path / "usage.db"), PostgresDatabase(database_url)):
        try:
            await database.migrate()
            await database.migrate()
            await database.write("writer-a", 1, rows)
            await database.write("writer-a", 1, rows)  # its first commit went unanswered
            await database.write("writer-b", 1, rows)  # another process's first batch
            await database.write("writer-a", 2, rows)
            (row,) = await database.read(day, day)
            assert row == Row(day, "team", "quick", "quick (mock)", 3, 30, 15, 6, 0, 135_000, 4_500)
        finally:
            await database.close()
    assert len(MIGRATIONS) == 1


async def test_workers_creating_one_sqlite_file_together_all_start(tmp_path: Path) -> None:
    # The switch of a new file to WAL failed at once, about once in a hundred openings,
    # when another opening raced it; so many new files, each opened by four at once.
    for attempt in range(150):
        databases = [SqliteDatabase(tmp_path / f"usage{attempt}.db") for _ in range(4)]
        try:
            await asyncio.gather(*(database.migrate() for database in databases))
            assert await databases[0].read(*days()) == []
        finally:
            for database in databases:
                await database.close()


async def test_an_unusable_sqlite_path_stops_the_start_naming_the_variable(tmp_path: Path) -> None:
    env = gateway_env(tmp_path, AICHAT_USAGE_DB=str(tmp_path / "missing" / "usage.db"))
    process = await asyncio.create_subprocess_exec(
        *SERVE, env=server_env(free_port(), **env), cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "AICHAT_USAGE_DB" in stderr.decode() and "missing/usage.db" in stderr.decode()
