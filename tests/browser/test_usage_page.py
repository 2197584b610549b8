"""The usage page in headless Chromium: its charts and tables show what ``/usage/api`` returns.

The gateway's history database is seeded with two weeks of three keys on two models before it
starts, so every number the page shows is known; a few real requests give a budget some use.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from aichat.app import create_app
from aichat.core.config import KeyConfig, ModelConfig, PriceConfig, Settings
from aichat.operations.history import RowKey
from aichat.operations.history_db import SqliteDatabase
from aichat.server import runner
from tests.browser.conftest import ARTIFACTS, LoopThread
from tests.browser.test_playground import Page, by_id, wait_for
from tests.conftest import _start

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ADMIN_KEY = "sk-admin-0123456789abcdef"
TEAM_KEY = "sk-team-usage-0123456789"
KEYS = ("claude-code", "codex", "ci")
MODELS = {"claude-sonnet": "claude-sonnet (openai)", "gpt-4o": "gpt-4o (openai)"}
DAYS = 14


def seeded_rows(today: datetime) -> dict[RowKey, list[int]]:
    """Two weeks of usage: each key on each model every day, in varied and known amounts."""
    rows: dict[RowKey, list[int]] = {}
    for back in range(DAYS):
        day = (today - timedelta(days=back)).date().isoformat()
        for k, key in enumerate(KEYS):
            for m, (model, upstream) in enumerate(MODELS.items()):
                requests = 5 + (back * 7 + k * 3 + m * 11) % 40
                inputs = requests * (2_000 + 500 * k)
                read = inputs * (k + 1) // 5
                outputs = requests * (300 + 100 * m)
                cost = inputs * 2_500 + outputs * 10_000 - read * 2_250
                rows[(day, key, model, upstream)] = [
                    *(requests, inputs, outputs, read, 0),
                    *(cost, read * 2_250),
                ]
    return rows


@dataclass
class UsageGateway:
    url: str
    since: str
    until: str


async def _start_gateway(history: Path) -> tuple[UsageGateway, web.AppRunner]:
    today = datetime.now(UTC)
    database = SqliteDatabase(history)
    await database.migrate()
    await database.write("seed", 1, seeded_rows(today))
    await database.close()
    team = KeyConfig(
        name="claude-code",
        key_sha256=hashlib.sha256(TEAM_KEY.encode()).hexdigest(),
        tokens_per_day=50_000,
        usd_per_month=Decimal(5),
    )
    # A dollar per thousand tokens: the requests below spend some of the money budget.
    echo = ModelConfig(
        name="echo", provider="mock", price=PriceConfig(input=Decimal(1000), output=Decimal(1000))
    )
    settings = Settings(
        keys=(team,),
        routes=(echo,),
        admin_key=ADMIN_KEY,
        usage_db=history,
        host="127.0.0.1",
        port=0,
    )
    app = create_app(settings)
    app_runner, url = await _start(app, runner(app, shutdown_timeout=1))
    since = (today - timedelta(days=DAYS - 1)).date().isoformat()
    return UsageGateway(url, since, today.date().isoformat()), app_runner


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UsageGateway]:
    loop = LoopThread()
    started, app_runner = loop.run(_start_gateway(tmp_path_factory.mktemp("usage") / "usage.db"))
    try:
        for _ in range(3):  # some use of the budget, counted where budgets are kept
            request = urllib.request.Request(  # noqa: S310 (the test's own gateway)
                f"{started.url}/v1/chat/completions",
                data=json.dumps(
                    {"model": "echo", "messages": [{"role": "user", "content": "hi there"}]}
                ).encode(),
                headers={"Authorization": f"Bearer {TEAM_KEY}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                assert response.status == 200
        for _ in range(50):  # written within a second or two (WRITE_EVERY)
            if "echo" in [series["name"] for series in api(started, "model")["series"]]:
                break
            time.sleep(0.1)
        yield started
    finally:
        loop.run(app_runner.cleanup())
        loop.close()


def api(gateway: UsageGateway, by: str) -> dict[str, Any]:
    """What ``/usage/api`` answers a script."""
    request = urllib.request.Request(  # noqa: S310 (the test's own gateway)
        f"{gateway.url}/usage/api?since={gateway.since}&until={gateway.until}&by={by}",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        body: dict[str, Any] = json.load(response)
        return body


def open_usage(page: Page, gateway: UsageGateway, by: str = "key") -> None:
    page.get(f"{gateway.url}/usage?since={gateway.since}&until={gateway.until}&by={by}")
    page.execute_script("sessionStorage.clear()")
    page.refresh()
    by_id(page, "key").send_keys(ADMIN_KEY)
    by_id(page, "query").submit()
    wait_for(page, lambda p: p.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))


def loaded(page: Page) -> str | None:
    return page.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")


def chart(page: Page, name: str) -> dict[str, Any]:
    """A chart's data, series labels and whether its canvas has anything drawn on it."""
    found: dict[str, Any] = page.execute_script(
        "const u = window.usageCharts[arguments[0]];"
        "const pixels = u.ctx.getImageData(0, 0, u.ctx.canvas.width, u.ctx.canvas.height).data;"
        "return {data: u.data, labels: u.series.slice(1).map(s => s.label),"
        " drawn: pixels.some(v => v !== 0)};",
        name,
    )
    return found


def legend_at(page: Page, name: str, index: int) -> list[float]:
    """The numbers the chart's legend shows with the cursor on day ``index``."""
    texts: list[str] = page.execute_script(
        "const u = window.usageCharts[arguments[0]];"
        "u.setCursor({left: u.valToPos(u.data[0][arguments[1]], 'x'), top: 10});"
        "return [...u.root.querySelectorAll('.u-series:not(:first-child) .u-value')]"
        ".map(e => e.textContent);",
        name,
        index,
    )
    return [float(text.replace("$", "").replace(",", "")) for text in texts]


def test_charts_show_the_numbers_the_api_returns(browser: Page, gateway: UsageGateway) -> None:
    expected = api(gateway, "key")
    open_usage(browser, gateway)
    assert loaded(browser) == f"{gateway.since}/{gateway.until}/key"
    days = [
        int(datetime.fromisoformat(d).replace(tzinfo=UTC).timestamp()) for d in expected["days"]
    ]
    assert len(days) == DAYS
    for name, field in (("spend", "cost_usd"), ("tokens", "tokens")):
        shown = chart(browser, name)
        assert shown["drawn"], f"nothing drawn on the {name} chart"
        assert shown["labels"] == [series["name"] for series in expected["series"]] == sorted(KEYS)
        assert shown["data"][0] == days
        assert shown["data"][1:] == [series[field] for series in expected["series"]]
        for index in (0, DAYS - 1):
            assert legend_at(browser, name, index) == pytest.approx(
                [series[field][index] for series in expected["series"]], rel=1e-9
            )
    # Everything came from the gateway: a load from another host, which the page's
    # Content-Security-Policy refuses, or any script error would be logged here.
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_totals_top_keys_and_budgets_are_shown(browser: Page, gateway: UsageGateway) -> None:
    expected = api(gateway, "key")
    open_usage(browser, gateway)
    totals = expected["totals"]
    assert by_id(browser, "total-requests").text == f"{totals['requests']:,}"
    shown_cost = by_id(browser, "total-cost").text
    assert float(shown_cost.lstrip("$").replace(",", "")) == pytest.approx(totals["cost_usd"])
    assert by_id(browser, "cache-share").text == f"{totals['cache_read_share'] * 100:.1f} %"
    assert totals["cache_saved_usd"] > 0
    top = [
        row.text.split()[0] for row in browser.find_elements(By.CSS_SELECTOR, "#top-keys tbody tr")
    ]
    assert top == [row["key"] for row in expected["top_keys"]]
    tokens, money = expected["budgets"]
    assert tokens["key"] == money["key"] == "claude-code"
    assert 0 < tokens["used"] < tokens["limit"] == 50_000
    assert money["unit"] == "usd" and money["window"] == "month"
    assert money["used"] == tokens["used"] / 1000 and money["limit"] == 5  # $1 a 1,000 tokens
    first, second = browser.find_elements(By.CSS_SELECTOR, "#budgets tbody tr")
    assert first.text.startswith(f"claude-code day (tokens) {tokens['used']:,} 50,000")
    assert second.text.startswith(f"claude-code month (USD) {_dollars(money['used'])} $5.00")


def _dollars(amount: float) -> str:
    """``amount`` as the page writes dollars: two to six decimals."""
    whole, fraction = f"{amount:,.6f}".rstrip("0").split(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def test_grouping_by_model_redraws_the_charts(browser: Page, gateway: UsageGateway) -> None:
    expected = api(gateway, "model")
    open_usage(browser, gateway)
    Select(by_id(browser, "by")).select_by_value("model")
    wait_for(browser, lambda p: loaded(p) == f"{gateway.since}/{gateway.until}/model")
    shown = chart(browser, "spend")
    assert shown["labels"] == sorted([*MODELS, "echo"])
    assert shown["data"][1:] == [series["cost_usd"] for series in expected["series"]]
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "usage-by-model.png"))


def test_a_wrong_admin_key_is_refused_on_the_page(browser: Page, gateway: UsageGateway) -> None:
    browser.get(f"{gateway.url}/usage")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    by_id(browser, "key").send_keys("sk-not-the-admin-key")
    by_id(browser, "query").submit()
    wait_for(browser, lambda p: by_id(p, "error").is_displayed())
    assert "admin key" in by_id(browser, "error").text
    assert not [
        e
        for e in browser.get_log("browser")
        if e["level"] == "SEVERE" and "401" not in e["message"]
    ]


def test_screenshot(browser: Page, gateway: UsageGateway) -> None:
    browser.set_window_size(1200, 1350)
    try:
        open_usage(browser, gateway)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "usage.png"))
        assert (ARTIFACTS / "usage.png").stat().st_size > 20_000
    finally:
        browser.set_window_size(1100, 900)
