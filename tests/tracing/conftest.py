"""Gateways that trace to a receiver on 127.0.0.1, set up through the SDK's own variables."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import _start
from tests.fakes_native import FakeAnthropic, FakeResponses
from tests.tracing.phoenix_process import PYTHON as PHOENIX_PYTHON
from tests.tracing.phoenix_process import Phoenix, running_phoenix
from tests.tracing.receiver import Receiver

# The batch delay that tests wait for, instead of the default 5 s.
QUICK_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "20", "OTEL_EXPORTER_OTLP_TIMEOUT": "2"}


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Receiver]:
    """A trace receiver; gateways made after this fixture export to it."""
    fake = Receiver()
    app_runner, url = await _start(fake.app())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    for name, value in QUICK_EXPORT.items():
        monkeypatch.setenv(name, value)
    yield fake
    await app_runner.cleanup()


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    """Arize Phoenix on 127.0.0.1, once per run (skipped where it is not installed)."""
    if not PHOENIX_PYTHON.exists():
        pytest.skip("Phoenix is not installed (`make test` puts it in .venv/phoenix)")
    with running_phoenix(tmp_path_factory.mktemp("phoenix")) as running:
        yield running


@dataclass
class Natives:
    """A fake Anthropic Messages upstream and a fake Responses one, and their base URLs."""

    claude: FakeAnthropic
    claude_url: str
    responses: FakeResponses
    responses_url: str


@pytest.fixture
async def natives() -> AsyncIterator[Natives]:
    """The two native upstreams (``tests.fakes_native``), on 127.0.0.1."""
    claude, responses = FakeAnthropic(), FakeResponses()
    claude_runner, claude_url = await _start(claude.app())
    responses_runner, responses_url = await _start(responses.app())
    yield Natives(claude, claude_url, responses, f"{responses_url}/v1")
    await claude_runner.cleanup()
    await responses_runner.cleanup()
