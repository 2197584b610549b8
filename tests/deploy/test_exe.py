"""``python build.py``: the one-file executable serves a streamed completion end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp
import pytest

from tests.deploy.files import ROOT
from tests.deploy.procs import API_KEY, free_port, run, server_env, started
from tests.fakes import FakeAichats, json_events, sse_events

pytest.importorskip("PyInstaller", reason="needs the `build` extra (make test installs it)")


@pytest.fixture(scope="module")
def executable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dist/aichat`` as build.py makes it, built into a scratch directory."""
    base = tmp_path_factory.mktemp("exe")
    dist = base / "dist"
    built = run(
        sys.executable, ROOT / "build.py", "--dist-dir", dist, "--work-dir", base / "work",
        timeout=170,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    return dist / "aichat"


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_executable_streams_a_completion(
    executable: Path, upstream: tuple[FakeAichats, str], tmp_path: Path
) -> None:
    fake, upstream_url = upstream
    port = free_port()
    # The same flags and variables as the installed `aichat serve`.
    command = [str(executable), "serve", "--port", str(port), "--aichats-base-url", upstream_url]
    async with started(command, server_env(port), tmp_path) as server:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{server.url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {API_KEY}"},
                json={
                    "model": "gpt-4o",
                    "stream": True,
                    "messages": [{"role": "user", "content": "Hi"}],
                },
            ) as response,
        ):
            assert response.status == 200, await response.text()
            raw = await response.read()
        assert await server.stop() == 0, server.output()
    assert sse_events(raw)[-1] == "[DONE]"
    text = "".join(
        event["choices"][0]["delta"].get("content") or ""
        for event in json_events(raw)
        if event["choices"]
    )
    assert text == "".join(fake.pieces)
