"""Schemathesis against ``/openapi.json`` of a real gateway process whose models are mocks.

With no upstream behind it, any 5xx is the gateway's own fault. Every answer must match the
document (status, content type, headers, body schema), invalid requests must be refused and
valid ones accepted, and every error must be in OpenAI's shape (``schemathesis_hooks``).

The schemathesis command runs it, not its pytest plugin: the command is its stable
interface, and it runs every phase (examples, coverage, fuzzing, stateful).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aichat.healthcheck import check
from tests.deploy.procs import API_KEY, free_port, run, server_env

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
CONFIG = """
[[models]]
name = "gpt-4o"
provider = "mock"

[[models]]
name = "demo"
provider = "mock"
text = "Hello from the mock provider."
"""


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway process on a free loopback port, serving only mock models."""
    workdir = tmp_path_factory.mktemp("schemathesis")
    (workdir / "aichat.toml").write_text(CONFIG)
    port = free_port()
    env = server_env(port, AICHAT_CONFIG="aichat.toml", AICHAT_LOG_LEVEL="WARNING")
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "aichat", "serve"], env=env, cwd=workdir, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not check(f"{url}/health", 1.0):
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
    # aiohttp itself logs the requests it cannot parse (schemathesis probes with a NUL byte
    # in a header); the gateway's own code must log no error at all.
    output = log.read_text(errors="replace")
    assert "ERROR aichat" not in output, output


INBOUND = "^/v1/(responses|messages)"
RUNS = {
    # Chat Completions, models and health: every check, the document is exact there.
    "openai": ["--exclude-path-regex", INBOUND],
    # The Responses and Messages request schemas type their nested items (input items,
    # tools, tool_choice, content blocks) as plain objects: a schema-valid body can still
    # be refused with a clear 400 by the handler's deeper checks. Everything else is on.
    "inbound": [
        "--include-path-regex",
        INBOUND,
        "--exclude-checks",
        "positive_data_acceptance",
    ],
}


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("scope", list(RUNS))
def test_schemathesis_finds_nothing(gateway_url: str, tmp_path: Path, scope: str) -> None:
    # Nothing inherited: no proxy settings, no schemathesis.toml of the user's, no stray HOME.
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
        "NO_PROXY": "127.0.0.1",
        "SCHEMATHESIS_HOOKS": str(HOOKS),
    }
    result = run(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{gateway_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {API_KEY}",
        "--checks",
        "all",
        *RUNS[scope],
        "--max-examples",
        "100",
        "--seed",
        "20240501",
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        timeout=90,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
