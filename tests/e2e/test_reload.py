"""SIGHUP reloads the env file and the config file of a running gateway, or refuses a bad one.

SIGHUP is safe at any moment (held during start-up, one reload once the gateway can), and
``aichat reload`` finds the gateway, or its supervisor with ``--workers``, by its PID file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sys
import threading
from pathlib import Path

import aiohttp
import pytest

from aichat.answer import reload
from aichat.answer.reload import LIVE, config_hash, reload_config
from aichat.answer.state import ROUTER
from aichat.core.config import ModelConfig, Settings, load_settings
from aichat.healthcheck import check
from aichat.operations.metrics import METRICS
from tests.conftest import GatewayFactory
from tests.deploy.procs import Server, free_port, launched, run, server_env, started
from tests.fakes import FakeOpenAI, json_events, sse_events

HELLO = [{"role": "user", "content": "hi"}]
OLD = """
[[models]]
name = "slow"
provider = "mock"
text = "the old answer in eight words, slowly"
tokens_per_second = 8

[[keys]]
name = "team"
key_env = "TEAM_KEY"
"""
NEW = """
[[models]]
name = "slow"
provider = "mock"
text = "the new answer"

[[models]]
name = "fresh"
provider = "mock"

[[keys]]
name = "team"
key_env = "TEAM_KEY"
"""
BAD = NEW.replace('name = "fresh"', 'name = "fresh"\nfallbacks = ["nowhere"]')


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _ready_config(http: aiohttp.ClientSession, server: Server) -> str:
    async with http.get(f"{server.url}/ready?verbose=1") as response:
        config: str = (await response.json())["config"]
        return config


async def _reloads(http: aiohttp.ClientSession, server: Server, result: str) -> float:
    text = await (await http.get(f"{server.url}/metrics")).text()
    (value,) = re.findall(
        rf'^aichat_config_reloads_total\{{result="{result}"\}} (\S+)$', text, re.M
    )
    return float(value)


async def _until(condition: object, server: Server, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():  # type: ignore[operator]
        assert loop.time() < deadline, server.output()
        await asyncio.sleep(0.05)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "aichat.toml").write_text(OLD)
    (tmp_path / ".env").write_text("TEAM_KEY=sk-team-old-0123\n")
    return tmp_path


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "aichat", "serve", *args]


async def test_sighup_swaps_config_and_env_while_a_stream_finishes_on_the_old_one(
    workdir: Path,
) -> None:
    env = server_env(free_port(), AICHAT_CONFIG=str(workdir / "aichat.toml"))
    async with started(_command(), env, workdir) as server, aiohttp.ClientSession() as http:
        before = await _ready_config(http, server)
        url = f"{server.url}/v1/chat/completions"
        body = {"model": "slow", "messages": HELLO, "stream": True}
        stream = await http.post(url, json=body, headers=_auth("sk-team-old-0123"))
        head = await stream.content.readline() + await stream.content.readline()
        assert head.startswith(b"data: ") and head.endswith(b"\n\n")  # the first event
        (workdir / "aichat.toml").write_text(NEW)
        (workdir / ".env").write_text("TEAM_KEY=sk-team-new-0123\n")
        server.process.send_signal(signal.SIGHUP)

        async def swapped() -> bool:
            return await _ready_config(http, server) != before

        await _until(swapped, server)
        # The stream that started on the old configuration ends on it, complete.
        raw = head + await stream.read()
        assert sse_events(raw)[-1] == "[DONE]"
        text = "".join(
            event["choices"][0]["delta"].get("content") or ""
            for event in json_events(raw)
            if event["choices"]
        )
        assert text == "the old answer in eight words, slowly"
        # New requests: the new key, the new models, the new answer.
        old_key = await http.post(
            url, json={**body, "stream": False}, headers=_auth("sk-team-old-0123")
        )
        assert old_key.status == 401
        new = await http.post(
            url, json={**body, "stream": False}, headers=_auth("sk-team-new-0123")
        )
        assert (await new.json())["choices"][0]["message"]["content"] == "the new answer"
        models = await http.get(f"{server.url}/v1/models", headers=_auth("sk-team-new-0123"))
        assert {m["id"] for m in (await models.json())["data"]} == {"slow", "fresh"}
        assert await _reloads(http, server, "success") == 1
    # The reload came while the stream was still running: its access line is written after.
    lines = server.output().splitlines()
    reloaded = next(i for i, line in enumerate(lines) if "configuration reloaded" in line)
    streamed = next(i for i, line in enumerate(lines) if "stream=True" in line)
    assert reloaded < streamed, server.output()


async def test_a_bad_config_is_refused_with_one_line_and_the_old_one_stays(
    workdir: Path,
) -> None:
    env = server_env(free_port(), AICHAT_CONFIG=str(workdir / "aichat.toml"))
    async with started(_command(), env, workdir) as server, aiohttp.ClientSession() as http:
        before = await _ready_config(http, server)
        (workdir / "aichat.toml").write_text(BAD)
        server.process.send_signal(signal.SIGHUP)

        async def refused() -> bool:
            return await _reloads(http, server, "refused") == 1

        await _until(refused, server)
        (line,) = [line for line in server.output().splitlines() if "reload refused" in line]
        assert str(workdir / "aichat.toml") in line
        assert '[[models]] name = "fresh" fallbacks' in line and "nowhere" in line
        assert await _ready_config(http, server) == before
        answer = await http.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "slow", "messages": HELLO},
            headers=_auth("sk-team-old-0123"),
        )
        assert answer.status == 200
        assert await _reloads(http, server, "success") == 0


async def test_unchanged_upstreams_keep_their_circuit_across_a_reload(
    make_gateway: GatewayFactory,
    openai_upstream: tuple[FakeOpenAI, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    up, url = openai_upstream
    up.status = 503
    flaky = ModelConfig(name="flaky", provider="openai", base_url=url)
    echo = ModelConfig(name="echo", provider="mock", text="one")
    gateway = await make_gateway(routes=(flaky, echo), breaker_failures=1, retries=0)
    assert (await gateway.post_chat({"model": "flaky", "messages": HELLO})).status == 503
    router = gateway.app[ROUTER]
    kept = router.resolve("flaky")
    assert kept.breaker.state == "open"
    settings = gateway.app[LIVE].settings
    changed = echo.model_copy(update={"text": "two"})

    def load() -> Settings:
        return settings.model_copy(update={"routes": (flaky, changed), "max_body_bytes": 10})

    caplog.set_level(logging.INFO, "aichat.reload")
    assert await reload_config(gateway.app, load)
    assert "take effect on restart only: max_body_bytes" in caplog.text
    assert router.resolve("flaky") is kept and kept.breaker.state == "open"
    (done,) = [r for r in caplog.records if r.getMessage() == "configuration reloaded"]
    assert done.fields["models"] == 2 and done.fields["keys"] == 1  # conftest's one key
    answer = await gateway.post_chat({"model": "echo", "messages": HELLO})
    assert (await answer.json())["choices"][0]["message"]["content"] == "two"


async def test_a_refusal_is_one_line_even_when_the_file_holds_line_breaks(
    make_gateway: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await make_gateway(routes=(ModelConfig(name="echo", provider="mock"),))
    config = tmp_path / "aichat.toml"
    config.write_text('[[models]]\nname = "a\\nforged line"\nprovider = "nowhere"\n')

    def load() -> Settings:
        env = {"AICHAT_CONFIG": str(config), "AICHAT_ALLOW_NO_AUTH": "1"}
        return load_settings(env, dotenv_path=None)

    assert not await reload_config(gateway.app, load)
    (record,) = [r for r in caplog.records if r.name == "aichat.reload"]
    assert "\n" not in record.getMessage() and "forged line" in record.getMessage()
    assert str(config) in record.getMessage()


def _holds_sighup(pid: int) -> bool:
    """Whether process ``pid`` has SIGHUP blocked now (its first moment under aichat's control)."""
    status = Path(f"/proc/{pid}/status").read_text()
    (blocked,) = re.findall(r"^SigBlk:\s*([0-9a-f]+)$", status, re.M)
    return bool(int(blocked, 16) & (1 << (signal.SIGHUP - 1)))


async def _models(http: aiohttp.ClientSession, server: Server, key: str) -> set[str]:
    async with http.get(f"{server.url}/v1/models", headers=_auth(key)) as response:
        return {model["id"] for model in (await response.json())["data"]}


WORKERS = [
    pytest.param((), id="one-process"),
    pytest.param(("--workers", "2"), id="two-workers", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("workers", WORKERS)
async def test_sighup_during_start_up_waits_and_then_reloads(
    workdir: Path, workers: tuple[str, ...]
) -> None:
    env = server_env(free_port(), AICHAT_CONFIG=str(workdir / "aichat.toml"))
    async with launched(_command(*workers), env, workdir) as server:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await asyncio.to_thread(_holds_sighup, server.process.pid):
            assert server.process.returncode is None and loop.time() < deadline, server.output()
            await asyncio.sleep(0.001)
        # From here on a SIGHUP must never end it: one every 20 ms until it answers, and the
        # file changes in between, so the configuration it serves at the end must be NEW.
        (workdir / "aichat.toml").write_text(NEW)
        while not await asyncio.to_thread(check, f"{server.url}/health", 0.5):
            server.process.send_signal(signal.SIGHUP)
            assert server.process.returncode is None, server.output()
            assert loop.time() < deadline, server.output()
            await asyncio.sleep(0.02)
        server.process.send_signal(signal.SIGHUP)  # and once it listens
        async with aiohttp.ClientSession() as http:

            async def fresh() -> bool:
                return await _models(http, server, "sk-team-old-0123") == {"slow", "fresh"}

            await _until(fresh, server)
        assert server.process.returncode is None, server.output()
        assert await server.stop() == 0, server.output()
    assert "Hangup" not in server.output() and "Traceback" not in server.output()


@pytest.mark.parametrize("workers", WORKERS)
async def test_aichat_reload_finds_the_gateway_by_its_pid_file(
    workdir: Path, workers: tuple[str, ...]
) -> None:
    env = server_env(free_port(), AICHAT_CONFIG=str(workdir / "aichat.toml"))
    pid_file = workdir / f"aichat-{env['AICHAT_PORT']}.pid"  # TMPDIR is the workdir
    async with started(_command(*workers), env, workdir) as server, aiohttp.ClientSession() as http:
        pid = server.process.pid  # with workers, the supervisor's
        assert pid_file.read_text() == f"{pid}\n"
        assert f"(pid {pid}" in server.output()
        (workdir / "aichat.toml").write_text(NEW)
        reload = [sys.executable, "-m", "aichat", "reload"]
        result = await asyncio.to_thread(
            run, *reload, cwd=workdir, env={**env, "TMPDIR": str(workdir)}
        )
        assert result.returncode == 0, result.stderr
        assert f"sent SIGHUP to the gateway (pid {pid}, {pid_file})" in result.stdout

        async def reloaded() -> bool:
            return server.output().count("configuration reloaded") == max(1, len(workers))

        await _until(reloaded, server)
        assert await _models(http, server, "sk-team-old-0123") == {"slow", "fresh"}
        assert await server.stop() == 0, server.output()
    assert not pid_file.exists()  # removed at exit
    result = await asyncio.to_thread(run, *reload, cwd=workdir, env={**env, "TMPDIR": str(workdir)})
    assert result.returncode == 1
    assert result.stderr == (
        f"aichat: no PID file at {pid_file}: is the gateway running? (its path is "
        "AICHAT_PID_FILE / --pid-file, by default set by the port)\n"
    )


async def test_a_config_caught_half_written_is_applied_only_once_it_stops_changing(
    make_gateway: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reload, "SETTLE", 0.01)
    gateway = await make_gateway(routes=(ModelConfig(name="echo", provider="mock"),))
    config = tmp_path / "aichat.toml"
    first_half = '[[models]]\nname = "echo"\nprovider = "mock"\ntext = "half"\n'
    config.write_text(first_half)
    seen: list[str] = []

    def load() -> Settings:
        seen.append(config.read_text())
        settings = load_settings(
            {"AICHAT_CONFIG": str(config), "AICHAT_ALLOW_NO_AUTH": "1"}, dotenv_path=None
        )
        if len(seen) == 1:  # the writer finishes after the first read
            config.write_text(first_half.replace("half", "whole") + NEW.split("[[keys]]")[0])
        return settings

    assert await reload_config(gateway.app, load)
    assert len(seen) == 3  # half, whole, whole again: settled
    answer = await gateway.post_chat({"model": "echo", "messages": HELLO})
    assert (await answer.json())["choices"][0]["message"]["content"] == "whole"
    assert gateway.app[ROUTER].resolve("fresh").name == "fresh"


async def test_a_config_that_never_stops_changing_is_refused(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(reload, "SETTLE", 0.001)
    gateway = await make_gateway(routes=(ModelConfig(name="echo", provider="mock"),))
    settings = gateway.app[LIVE].settings
    texts = iter(range(1000))

    def load() -> Settings:
        route = ModelConfig(name="echo", provider="mock", text=str(next(texts)))
        return settings.model_copy(update={"routes": (route,)})

    assert not await reload_config(gateway.app, load)
    assert next(texts) == reload.SETTLE_ROUNDS
    assert "kept changing" in caplog.text
    answer = await gateway.post_chat({"model": "echo", "messages": HELLO})
    assert answer.status == 200


async def test_a_burst_of_reload_signals_makes_one_reload_and_one_more(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reload, "SETTLE", 0.001)
    gateway = await make_gateway(routes=(ModelConfig(name="echo", provider="mock"),))
    settings = gateway.app[LIVE].settings
    loads = 0
    fourth = asyncio.Event()

    def load() -> Settings:
        nonlocal loads
        loads += 1
        if loads == 4:
            fourth.set()
        return settings

    reloads = reload.Reloads(gateway.app, load)
    for _ in range(200):
        reloads.ask()
    await asyncio.wait_for(fourth.wait(), 10)
    await asyncio.sleep(0.1)  # nothing more comes
    registry = gateway.app[METRICS].registry
    assert registry.get_sample_value("aichat_config_reloads_total", {"result": "success"}) == 2
    assert loads == 4  # two reloads of two reads each


async def test_each_read_of_a_reload_is_loaded_and_hashed_once_off_the_event_loop(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The settled configuration was hashed again on the event loop to be served: a large
    # file's dump and hash stalled every request once more.
    threads: dict[str, list[int]] = {"loaded": [], "hashed": []}  # where each load and hash ran

    def hashing(settings: Settings) -> str:
        threads["hashed"].append(threading.get_ident())
        return config_hash(settings)

    echo = ModelConfig(name="echo", provider="mock")
    gateway = await make_gateway(routes=(echo,))
    monkeypatch.setattr(reload, "config_hash", hashing)  # from here on: the reload's hashes
    monkeypatch.setattr(reload, "SETTLE", 0.001)
    changed = gateway.app[LIVE].settings.model_copy(
        update={"routes": (echo.model_copy(update={"text": "new"}),)}
    )

    def load() -> Settings:
        threads["loaded"].append(threading.get_ident())
        return changed

    assert await reload_config(gateway.app, load)
    assert len(threads["loaded"]) == len(threads["hashed"]) == 2  # two reads agree, once each
    assert threading.get_ident() not in threads["loaded"] + threads["hashed"]
    assert gateway.app[LIVE].hash == config_hash(changed)


async def test_a_flood_of_sighups_makes_a_few_reloads_and_never_stalls_health(
    workdir: Path,
) -> None:
    # 200 SIGHUPs made 200 reloads on the event loop over 6 minutes, /health taking 0.8-2.6 s.
    env = server_env(free_port(), AICHAT_CONFIG=str(workdir / "aichat.toml"))
    async with started(_command(), env, workdir) as server, aiohttp.ClientSession() as http:
        (workdir / "aichat.toml").write_text(NEW)
        loop = asyncio.get_running_loop()
        slowest = 0.0

        async def poll_health() -> None:
            nonlocal slowest
            while True:
                asked = loop.time()
                async with http.get(f"{server.url}/health") as answer:
                    assert answer.status == 200
                slowest = max(slowest, loop.time() - asked)
                await asyncio.sleep(0.02)

        polling = asyncio.create_task(poll_health())
        started_at = loop.time()
        for _ in range(200):  # 5 ms apart: the kernel merges none of them
            server.process.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.005)
        flood = loop.time() - started_at
        await asyncio.sleep(4 * reload.SETTLE)  # the reload queued last: its two reads
        reloads = await _reloads(http, server, "success")
        await asyncio.sleep(4 * reload.SETTLE)
        assert await _reloads(http, server, "success") == reloads  # none left waiting
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling  # raises what failed in it, if anything did
        assert server.process.returncode is None, server.output()
    # One at a time, each of two reads SETTLE apart, one more queued (and one for signals
    # that arrive late on a loaded machine): not 200.
    assert 1 <= reloads <= flood / reload.SETTLE + 3, (reloads, flood)
    assert slowest < 0.5, slowest
