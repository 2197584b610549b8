"""The playground page in headless Chromium: streaming, stopping, errors and inert answers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from aichat import __version__
from tests.browser.conftest import ARTIFACTS, DEMO_TEXT, HALF, SLOW_TEXT, XSS_TEXT, Servers
from tests.conftest import API_KEY

pytestmark = [pytest.mark.slow, pytest.mark.browser]

Page = webdriver.Chrome


def wait_for(page: Page, condition: Callable[[Page], Any], timeout: float = 10) -> Any:
    """Poll ``condition`` until it is truthy; fast polling catches text mid-stream."""
    return WebDriverWait(page, timeout, poll_frequency=0.02).until(condition)


def by_id(page: Page, element_id: str) -> WebElement:
    return page.find_element(By.ID, element_id)


def open_page(page: Page, servers: Servers, key: str | None = API_KEY) -> None:
    """A fresh page with an empty session, then ``key`` typed as a user would."""
    page.get(f"{servers.url}/")
    page.execute_script("sessionStorage.clear()")
    page.refresh()
    wait_for(page, lambda p: by_id(p, "health").get_attribute("data-state") == "ok")
    if key is not None:
        by_id(page, "key").send_keys(key)


def choose(page: Page, model: str) -> None:
    wait_for(page, lambda p: by_id(p, "model").is_enabled())
    Select(by_id(page, "model")).select_by_value(model)


def send(page: Page, text: str) -> None:
    by_id(page, "prompt").send_keys(text)
    by_id(page, "send").click()


def answer(page: Page) -> WebElement:
    """The newest answer bubble."""
    return page.find_elements(By.CSS_SELECTOR, '.msg[data-role="assistant"]')[-1]


def answer_state(page: Page) -> str | None:
    return answer(page).get_attribute("data-state")


def answer_text(page: Page) -> str:
    text: str = page.execute_script(
        "const all = document.querySelectorAll('.msg[data-role=assistant] .text');"
        "return all.length ? all[all.length - 1].textContent : '';"
    )
    return text


def error_text(page: Page) -> str:
    """The error area's text once it is shown."""
    wait_for(page, lambda p: by_id(p, "error").is_displayed())
    return by_id(page, "error").text


def test_page_shows_health_models_and_keeps_the_key_in_the_session_only(
    browser: Page, servers: Servers
) -> None:
    open_page(browser, servers, key=None)
    assert by_id(browser, "health-text").text == f"v{__version__} · ready"
    assert not by_id(browser, "model").is_enabled()  # no key, no model list

    by_id(browser, "key").send_keys(API_KEY)
    choose(browser, "echo")
    options = [o.get_attribute("value") for o in Select(by_id(browser, "model")).options]
    assert options == ["echo", "demo", "slow", "xss", "broken", "cut", "stuck", "limited"]
    storage = browser.execute_script(
        "return [sessionStorage.getItem('aichat.playground.key'), localStorage.length,"
        " document.cookie]"
    )
    assert storage == [API_KEY, 0, ""]

    browser.refresh()  # the key survives a reload of the tab, from sessionStorage
    choose(browser, "echo")
    send(browser, "Hello, gateway")
    wait_for(browser, lambda p: answer_state(p) == "done")
    assert answer_text(browser) == "Hello, gateway"
    assert not by_id(browser, "error").is_displayed()
    console: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    # No script error, no CSP violation, no failed load: the page is quiet when all is well.
    assert [e["message"] for e in console if e["level"] in ("SEVERE", "WARNING")] == []


def test_conversation_is_sent_along_until_new_chat(browser: Page, servers: Servers) -> None:
    open_page(browser, servers)
    choose(browser, "echo")
    send(browser, "first-turn")
    wait_for(browser, lambda p: answer_state(p) == "done")
    choose(browser, "broken")  # a fake aichats that records what it is asked
    send(browser, "second-turn")
    wait_for(browser, lambda p: answer_state(p) == "failed")
    asked = json.dumps(servers.broken.requests[-1])
    assert "first-turn" in asked
    assert "second-turn" in asked

    by_id(browser, "clear").click()
    assert by_id(browser, "empty").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, ".msg") == []
    assert not by_id(browser, "error").is_displayed()
    send(browser, "third-turn")
    wait_for(browser, lambda p: answer_state(p) == "failed")
    asked = json.dumps(servers.broken.requests[-1])
    assert "first-turn" not in asked
    assert "third-turn" in asked


def test_answer_streams_in_before_it_is_complete(browser: Page, servers: Servers) -> None:
    open_page(browser, servers)
    choose(browser, "slow")
    send(browser, "Take your time")
    seen: set[str] = set()

    def partial(page: Page) -> bool:
        if answer_state(page) == "streaming" and answer_text(page):
            seen.add(answer_text(page))
        return len(seen) >= 3

    wait_for(browser, partial)
    assert not any(text.endswith("THE-END") for text in seen)
    assert by_id(browser, "stop").is_enabled()
    assert not by_id(browser, "send").is_enabled()
    wait_for(browser, lambda p: answer_state(p) == "done")
    assert answer_text(browser) == SLOW_TEXT
    assert by_id(browser, "send").is_enabled()
    assert not by_id(browser, "stop").is_enabled()


def test_stop_aborts_the_request_up_to_the_upstream(browser: Page, servers: Servers) -> None:
    open_page(browser, servers)
    choose(browser, "stuck")
    send(browser, "Think hard")
    wait_for(browser, lambda p: answer_text(p) == "Thinking")
    by_id(browser, "stop").click()
    wait_for(browser, lambda p: answer_state(p) == "stopped")
    assert "Stopped" in by_id(browser, "status").text
    assert answer_text(browser) == "Thinking"  # what arrived stays
    assert not by_id(browser, "error").is_displayed()
    # The gateway noticed the closed connection and cancelled its upstream request.
    wait_for(browser, lambda _: servers.stuck.cancelled.is_set(), timeout=5)


def test_wrong_key_is_explained(browser: Page, servers: Servers) -> None:
    open_page(browser, servers, key="sk-not-the-key")
    assert "refused this API key (401)" in error_text(browser)
    assert not by_id(browser, "model").is_enabled()

    # A key that stops working while the page is open (rotated on the server, say): the
    # chat request itself gets the 401. Setting the value from script fires no input event,
    # so the model list stays as it was.
    browser.get(f"{servers.url}/")
    by_id(browser, "key").clear()
    by_id(browser, "key").send_keys(API_KEY)
    choose(browser, "echo")
    browser.execute_script(
        "document.getElementById('key').value = 'sk-rotated';"
        "document.getElementById('prompt').value = 'Still there?';"
        "document.getElementById('composer').requestSubmit();"
    )
    wait_for(browser, lambda p: answer_state(p) == "failed")
    assert "refused this API key (401)" in error_text(browser)


@pytest.mark.parametrize(
    ("model", "partial", "message"),
    [
        ("broken", "", "The upstream service failed (502)"),
        ("limited", "", "Too many requests (429)"),
        ("cut", HALF, "The answer broke off: the upstream failed in the middle of it."),
    ],
)
def test_upstream_failures_are_explained(
    browser: Page, servers: Servers, model: str, partial: str, message: str
) -> None:
    open_page(browser, servers)
    choose(browser, model)
    send(browser, "Hello?")
    wait_for(browser, lambda p: answer_state(p) == "failed")
    assert message in error_text(browser)
    assert answer_text(browser) == (partial or "(no answer)")


def upstream_line(page: Page, label: str) -> WebElement | None:
    """The upstream list's line for ``label`` (say ``broken (aichats)``), if shown."""
    for item in page.find_elements(By.CSS_SELECTOR, "#upstreams li"):
        if item.text.startswith(f"{label}:"):
            return item
    return None


def upstream_text(page: Page, label: str) -> str:
    line = upstream_line(page, label)
    return "" if line is None else line.text


def dot_colour(page: Page, label: str) -> str:
    line = upstream_line(page, label)
    assert line is not None
    colour: str = line.find_element(By.CSS_SELECTOR, ".dot").value_of_css_property(
        "background-color"
    )
    return colour


def test_upstreams_and_their_last_errors_are_listed_beside_the_models(
    browser: Page, servers: Servers
) -> None:
    open_page(browser, servers)
    wait_for(browser, lambda p: upstream_text(p, "echo (mock)"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#upstreams li")) == 8  # one per model
    # One that never answered is not shown as answering: neither its words nor its colour.
    xss = upstream_line(browser, "xss (mock)")  # asked only later, in this module's order
    assert xss is not None and xss.text == "xss (mock): not used yet"
    assert xss.get_attribute("data-state") == "unused"
    choose(browser, "echo")
    send(browser, "Hi")
    wait_for(browser, lambda p: answer_state(p) == "done")
    wait_for(browser, lambda p: upstream_text(p, "echo (mock)") == "echo (mock): answering")
    assert dot_colour(browser, "xss (mock)") != dot_colour(browser, "echo (mock)")
    choose(browser, "broken")
    send(browser, "Anyone?")
    wait_for(browser, lambda p: answer_state(p) == "failed")
    # Refreshed after the answer: the failure is there, with its cause, without a reload.
    wait_for(browser, lambda p: "last error" in upstream_text(p, "broken (aichats)"))
    assert "HTTP 500 from 127.0.0.1:" in upstream_text(browser, "broken (aichats)")
    broken = upstream_line(browser, "broken (aichats)")
    assert broken is not None
    assert broken.get_attribute("data-state") in ("unanswered", "open")  # it never answered


def test_markup_in_an_answer_stays_text(browser: Page, servers: Servers) -> None:
    open_page(browser, servers)
    choose(browser, "xss")
    send(browser, "Say something nasty")
    wait_for(browser, lambda p: answer_state(p) == "done")
    assert answer_text(browser) == XSS_TEXT  # shown literally, tags and all
    made = browser.execute_script(
        "return [window.__pwned, document.querySelectorAll('#log img, #log script, #log b').length]"
    )
    assert made == [None, 0]
    # And the header's Trusted Types policy backs that up: HTML sinks refuse plain strings.
    blocked = browser.execute_script(
        "try { document.getElementById('log').innerHTML = '<b>x</b>'; return 'assigned'; }"
        " catch (e) { return e.name; }"
    )
    assert blocked == "TypeError"


def test_screenshots(browser: Page, servers: Servers) -> None:
    """The README's picture (a streaming answer) and a phone-width one, kept for CI."""
    ARTIFACTS.mkdir(exist_ok=True)
    open_page(browser, servers)
    choose(browser, "echo")
    send(browser, "Hello! Is anyone there?")
    wait_for(browser, lambda p: answer_state(p) == "done")
    choose(browser, "demo")
    send(browser, "Does it work?")
    wait_for(browser, lambda p: len(answer_text(p)) > len(DEMO_TEXT) // 2)
    by_id(browser, "prompt").send_keys("And can I stop it?")
    browser.save_screenshot(str(ARTIFACTS / "playground.png"))
    by_id(browser, "stop").click()
    wait_for(browser, lambda p: answer_state(p) == "stopped")

    browser.set_window_size(420, 860)
    try:
        choose(browser, "limited")
        send(browser, "Once more")
        error_text(browser)
        time.sleep(0.1)  # let the layout settle after the error area appears
        browser.save_screenshot(str(ARTIFACTS / "playground-narrow.png"))
    finally:
        browser.set_window_size(1100, 900)
