"""A real gateway, real fake upstreams and a headless Chromium driven by selenium.

Selenium blocks the thread that calls it, so the servers cannot share the test's event loop:
they run on a loop of their own in a background thread, and the tests are plain functions.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from aichat.app import create_app
from aichat.core.config import ModelConfig, Settings
from aichat.server import runner
from tests.conftest import API_KEY, _start
from tests.fakes import FakeAichats, FakeOpenAI, aichats_body

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).parents[1] / "artifacts"

# Headless, and quiet on the network: no sync, no component or field-trial downloads.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,900",
)

# An answer that would run script if the page ever parsed upstream text as HTML.
XSS_TEXT = (
    'Look: <img src=x onerror="window.__pwned=1"> and '
    "<script>window.__pwned=1</script> and <b>bold</b>"
)
DEMO_TEXT = (
    "Yes, it works. This answer comes from the mock provider, streamed word by word through "
    "the gateway just as a real model's answer would be. Press Stop to cut it short: the "
    "gateway then cancels its upstream request at once."
)
SLOW_TEXT = " ".join(f"word{i}" for i in range(1, 25)) + " THE-END"
HALF = "Half an answer"

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running in a daemon thread; ``run`` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=15)
        self.loop.close()


@dataclass
class Servers:
    """The gateway under test and the fakes behind its models."""

    url: str
    broken: FakeAichats  # answers 500, and records what it was asked
    stuck: FakeAichats  # streams one piece, then waits forever: for the stop button
    runners: list[web.AppRunner] = field(default_factory=list)


def _first_event_then(pieces: list[str], **behaviour: Any) -> FakeAichats:
    """A fake aichats whose first write is exactly the first piece's event."""
    first = len(aichats_body(pieces[:1]))
    return FakeAichats(pieces=pieces, chunk_size=first, **behaviour)


async def _start_servers(history: Path) -> Servers:
    broken = FakeAichats(status=500)
    cut = _first_event_then([HALF, " and the rest"], delay_between=0.3, drop_after=1)
    stuck = _first_event_then(["Thinking", " about it"], stall_after=1)
    limited = FakeOpenAI(status=429)
    runners = []
    urls = {}
    for name, fake in (("broken", broken), ("cut", cut), ("stuck", stuck), ("limited", limited)):
        app_runner, urls[name] = await _start(fake.app())
        runners.append(app_runner)
    routes = (
        ModelConfig(name="echo", provider="mock"),
        ModelConfig(name="demo", provider="mock", text=DEMO_TEXT, tokens_per_second=8),
        ModelConfig(name="slow", provider="mock", text=SLOW_TEXT, tokens_per_second=12),
        ModelConfig(name="xss", provider="mock", text=XSS_TEXT),
        ModelConfig(name="broken", provider="aichats", base_url=urls["broken"]),
        ModelConfig(name="cut", provider="aichats", base_url=urls["cut"]),
        ModelConfig(name="stuck", provider="aichats", base_url=urls["stuck"]),
        ModelConfig(name="limited", provider="openai", base_url=f"{urls['limited']}/v1"),
    )
    settings = Settings(
        api_keys=(API_KEY,),
        routes=routes,
        retries=0,
        host="127.0.0.1",
        port=0,
        usage_db=history,
    )
    app = create_app(settings)
    app_runner, url = await _start(app, runner(app, shutdown_timeout=1))
    return Servers(url, broken, stuck, [app_runner, *runners])


async def _stop_servers(servers: Servers) -> None:
    for app_runner in servers.runners:
        await app_runner.cleanup()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """The gateway and its upstreams, on their own loop and thread for the whole module."""
    loop = LoopThread()
    started = loop.run(_start_servers(tmp_path_factory.mktemp("history") / "usage.db"))
    try:
        yield started
    finally:
        loop.run(_stop_servers(started))
        loop.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Debian's headless Chromium through Debian's chromedriver: nothing is downloaded."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.skip(
            f"browser tests need {' and '.join(missing)}: "
            "apt-get install chromium chromium-driver (.ci/run does this when they are missing)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager is never consulted, so it never downloads.
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()
