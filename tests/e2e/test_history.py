"""The usage history: real gateway processes writing to SQLite and to PostgreSQL, complete and exact.

Every answer's usage comes back to the client too, so what the history must hold is known
exactly: the sum of what the clients were told, priced at the route's own rates. What the
database holds is also what its readers show: ``aichat usage`` and the usage page's API, to
the nano-dollar.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aichat.core.config import load_settings
from aichat.operations import history
from aichat.operations.history import History, Row, utc_day
from aichat.operations.history_db import (
    MIGRATIONS,
    PostgresDatabase,
    SqliteDatabase,
    open_database,
)
from aichat.operations.pricing import Cost
from aichat.providers.base import Usage
from tests.deploy.procs import Server, free_port, run, server_env, started
from tests.postgres import Cluster, binaries, cluster

KEYS = {"team": "sk-team-0123456789", "ci": "sk-ci-0123456789abc"}
ADMIN_KEY = "sk-admin-history-0123456789"
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


async def stored(env: dict[str, str]) -> Totals:
    """What the database a gateway on ``env`` writes to holds, per key."""
    database = open_database(load_settings(env=env, dotenv_path=None))
    try:
        return held(await database.read(*days()))
    finally:
        await database.close()


def reported(summaries: list[dict[str, Any]]) -> Totals:
    """Per-key summaries as ``aichat usage --json`` and ``/usage/api`` give them, as ``Totals``."""
    return {
        summary["key"]: Counter(
            requests=summary["requests"],
            input_tokens=summary["input_tokens"],
            output_tokens=summary["output_tokens"],
            cost_nano_usd=round(summary["cost_usd"] * 1e9),  # dollars to the nano-dollar
        )
        for summary in summaries
    }


def aichat_usage(env: dict[str, str], cwd: Path) -> Totals:
    """What ``aichat usage --json`` prints for yesterday and today, on a gateway's ``env``."""
    since, until = days()
    listed = run(
        *(sys.executable, "-m", "aichat", "usage", "--json", "--since", since, "--until", until),
        env=server_env(0, path=str(Path(sys.executable).parent), **env),
        cwd=cwd,
    )
    assert listed.returncode == 0, listed.stderr
    return reported([json.loads(line) for line in listed.stdout.splitlines()])


async def usage_api(server: Server, expected: Totals) -> Totals:
    """What ``/usage/api`` of ``server`` reports per key, once it is ``expected`` (5 s at most:
    each gateway writes every second)."""
    since, until = days()
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for _ in range(50):
            async with http.get(f"{server.url}/usage/api?since={since}&until={until}") as r:
                assert r.status == 200, await r.text()
                shown = reported((await r.json())["top_keys"])
            if shown == expected:
                break
            await asyncio.sleep(0.1)
    return shown


async def test_one_gateway_keeps_its_history_in_sqlite_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "usage.db"
    path.parent.mkdir()
    env = gateway_env(tmp_path, AICHAT_USAGE_DB=str(path), AICHAT_ADMIN_KEY=ADMIN_KEY)
    totals: Totals = {}
    for run_number, per_key in enumerate((6, 4)):
        workdir = tmp_path / f"run{run_number}"
        workdir.mkdir()
        async with started(SERVE, server_env(free_port(), **env), workdir) as server:
            await traffic(server, totals, per_key)
            # After the restart, the page's API shows the first run's answers too.
            assert await usage_api(server, totals) == totals
            assert await server.stop() == 0, server.output()
    assert await stored(env) == totals
    assert aichat_usage(env, tmp_path) == totals
    assert totals["team"]["requests"] == 10


@pytest.fixture(params=["sqlite", "postgresql"])
async def shared_history(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """What gives gateways one history: a SQLite file (gateways on one host) or a PostgreSQL
    database (replicas anywhere)."""
    if request.param == "sqlite":
        return {"AICHAT_USAGE_DB": str(tmp_path / "usage.db")}
    postgres: Cluster = request.getfixturevalue("postgres")
    return {"DATABASE_URL": await postgres.create_database()}


async def test_two_gateways_write_to_one_database_at_once(
    tmp_path: Path, shared_history: dict[str, str]
) -> None:
    env = gateway_env(tmp_path, AICHAT_ADMIN_KEY=ADMIN_KEY, **shared_history)
    totals: Totals = {}
    workdirs = [tmp_path / "one", tmp_path / "two"]
    for workdir in workdirs:
        workdir.mkdir()
    async with (
        started(SERVE, server_env(free_port(), **env), workdirs[0]) as first,
        started(SERVE, server_env(free_port(), **env), workdirs[1]) as second,
    ):
        await asyncio.gather(*(traffic(server, totals, 25) for server in (first, second)))
        # Each gateway's page shows what both wrote.
        for server in (first, second):
            assert await usage_api(server, totals) == totals
        await asyncio.gather(*(traffic(server, totals, 10) for server in (first, second)))
        # Both stop at once, each writing what it has left while the other does.
        codes = await asyncio.gather(first.stop(), second.stop())
        assert codes == [0, 0], first.output() + second.output()
    assert await stored(env) == totals
    assert aichat_usage(env, tmp_path) == totals
    assert totals["ci"]["requests"] == 70


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
        assert await stored(env) == totals


async def test_what_an_outage_keeps_out_of_the_history_is_counted_and_logged_in_dollars(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(history, "MAX_PENDING_ROWS", 2)  # reached by the third model
    monkeypatch.setattr(history, "CLOSE_WITHIN", 1.0)  # a stopping gateway's last tries
    # Nothing listens there: an outage that outlasts the gateway.
    kept = History(PostgresDatabase(f"postgresql://aichat@127.0.0.1:{free_port()}/usage"))
    await kept.start()
    for model in ("a", "b", "b", "c"):
        kept.add("team", model, f"{model} (mock)", Usage(100, 20), Cost(1_250_000))
    assert (kept.unwritten_requests, kept.lost_requests) == (3, 1)  # no room for "c"
    caplog.set_level(logging.ERROR, "aichat.history")
    await kept.close()
    lost = {m.name: m.samples[0].value for m in kept.collector().collect()}
    assert lost["aichat_usage_history_lost_requests"] == 4
    assert lost["aichat_usage_history_write_failures"] >= 2
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "usage history: 3 answers (0.00375 USD) could not be written before shutdown"
    ]


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
