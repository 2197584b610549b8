"""Honest endings, over every client API x every upstream API and each way a stream can end.

A stream ends as a success (``[DONE]``, ``message_stop``, ``response.completed`` or
``response.incomplete``) only when the upstream's answer is complete; any other ending is the
client API's error event, and nothing follows it. Three of the nine pairs are the client's
own API upstream (chat → chat, messages → anthropic, responses → responses), passed through
as bytes: there a failure the upstream reported itself reaches the client as the upstream's
own event.

Decisions:

- The upstream is one fake (``tests.fakes_endings``) serving all three APIs, so every pair
  meets the same failures: the connection ended cleanly without the final event, cut
  (reset), the API's own error event (both of Responses' forms), silence past the idle
  timeout, a last event cut off mid-line, an event of broken JSON, the final event followed
  by more (an error event and broken JSON, in the same write or apart), an answer cut at the
  token limit, and the client leaving.
- The client side reads the raw SSE bytes: the exact last event is the assertion, which an
  SDK would hide behind an exception or a generator's end.
- Broken JSON is a failure only where aichat reads the event. A pass-through forwards the
  events it does not need as they came, unparsed (it does not re-parse on the hot path what
  it can pass on), so those three pairs are left out: the client's own parser meets it.
- The access line says how the request ended: an ``error`` field for a stream that failed,
  none for a complete one, and status 499 for a client that left.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from aichat.core.config import ModelConfig
from tests.conftest import API_KEY, GatewayFactory, _start
from tests.fakes_endings import ANSWERS, BROKEN, FAILURES, OVERLOADED, EndingUpstream, Script

# The route of each upstream API, and the client APIs' paths and requests.
ROUTES = {"chat": "chat", "messages": "claude", "responses": "resp"}
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}
HELLO = [{"role": "user", "content": "Say hello"}]
REQUESTS: dict[str, dict[str, Any]] = {
    "chat": {"messages": HELLO},
    "messages": {"messages": HELLO, "max_tokens": 16},
    "responses": {"input": "Say hello"},
}
APIS = list(PATHS)
EVERY_PAIR = pytest.mark.parametrize(
    ("client", "upstream_api"),
    [
        pytest.param(client, upstream, id=f"{client}-{upstream}")
        for client in APIS
        for upstream in APIS
    ],
)
CUT = 3  # the events an upstream sends before it goes wrong: the answer has started


def _failing(api: str, mode: str) -> Script:
    """The upstream's answer in ``api`` going wrong as ``mode`` says."""
    events = ANSWERS[api](False)
    if mode == "closed":  # everything but the final event, then a proper end of the body
        return Script(events[:-1])
    if mode == "reset":
        return Script(events[:CUT], "abort")
    if mode == "stalled":
        return Script(events[:CUT], "stall")
    if mode == "truncated":  # the connection ends in the middle of an event
        return Script([*events[:CUT], events[CUT][: len(events[CUT]) // 2]])
    if mode == "broken_json":
        return Script([*events[:CUT], BROKEN[api], *events[CUT:]])
    kind = 1 if mode == "error_event_plain" else 0  # Responses' ``error`` event
    return Script([*events[:CUT], FAILURES[api][kind]])


def _complete(api: str, mode: str) -> Script:
    """The upstream's whole answer in ``api``: at the token limit, or followed by more, in
    the final event's write or in writes of their own."""
    if mode == "length":
        return Script(ANSWERS[api](True))
    events = ANSWERS[api](False)
    after = [FAILURES[api][0], BROKEN[api]]
    if mode == "after_the_end":
        return Script([*events[:-1], b"".join([events[-1], *after])])
    return Script([*events, *after])


FAILING = ["closed", "reset", "error_event", "stalled", "truncated", "broken_json"]


def _failing_cases() -> list[Any]:
    cases = []
    for client in APIS:
        for upstream in APIS:
            modes = FAILING + (["error_event_plain"] if upstream == "responses" else [])
            for mode in modes:
                if mode == "broken_json" and client == upstream:
                    continue  # passed through unread (see the module's docstring)
                cases.append(pytest.param(client, upstream, mode, id=f"{client}-{upstream}-{mode}"))
    return cases


@dataclass
class Pairs:
    """The scripted upstream, a gateway in front of it per stream, and their access lines."""

    fake: EndingUpstream
    url: str
    make_gateway: GatewayFactory
    caplog: pytest.LogCaptureFixture

    async def stream(
        self, client: str, upstream_api: str, script: Callable[[str], Script], idle: float = 60.0
    ) -> aiohttp.ClientResponse:
        """A stream from ``client``'s API to ``upstream_api``'s, the upstream doing
        ``script``; ``idle``: the gateway's idle timeout."""
        self.fake.script = script
        secret = SecretStr("sk-upstream")
        url = self.url
        routes = (
            ModelConfig(name="chat", provider="openai", base_url=f"{url}/v1", upstream_model="m"),
            ModelConfig(
                name="resp",
                provider="openai",
                api="responses",
                base_url=f"{url}/v1",
                api_key=secret,
            ),
            ModelConfig(name="claude", provider="anthropic", base_url=url, api_key=secret),
        )
        gw = await self.make_gateway(routes=routes, retries=0, idle_timeout=idle)
        body = {"model": ROUTES[upstream_api], "stream": True, **REQUESTS[client]}
        headers = {"Authorization": f"Bearer {API_KEY}"}
        return await gw.http.post(f"{gw.url}{PATHS[client]}", json=body, headers=headers)

    async def access_line(self, client: str) -> dict[str, Any]:
        """The access line of the one request of ``client`` (written just after its
        response)."""
        for _ in range(100):
            lines = [
                fields
                for record in self.caplog.records
                if record.name == "aichat.access"
                and (fields := getattr(record, "fields", {})).get("path") == PATHS[client]
            ]
            if lines:
                (line,) = lines
                return line
            await asyncio.sleep(0.02)
        raise AssertionError(f"no access line for {client}")


@pytest.fixture
async def pairs(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Pairs]:
    """The scripted upstream, with access lines captured."""
    caplog.set_level(logging.INFO, "aichat.access")
    fake = EndingUpstream()
    app_runner, url = await _start(fake.app())
    yield Pairs(fake, url, make_gateway, caplog)
    await app_runner.cleanup()


def _events(raw: bytes) -> list[tuple[str, str]]:
    """``(event name, data)`` of every event of a complete SSE body, in order."""
    assert raw.endswith(b"\n\n"), raw[-80:]
    events = []
    for block in raw.decode().split("\n\n")[:-1]:
        name, data = "", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        events.append((name, "\n".join(data)))
    return events


SUCCESS = {"[DONE]", "message_stop", "response.completed", "response.incomplete"}


def _successes(events: list[tuple[str, str]]) -> list[str]:
    """Every success terminator among ``events``, of any API."""
    return [name or data for name, data in events if (name or data) in SUCCESS]


def _failure_ending(client: str, upstream: str, mode: str) -> Callable[[list[Any]], bool]:
    """Whether a stream's events end as ``client``'s API ends a failed stream."""
    native = client == upstream and mode.startswith("error_event")
    if client == "chat":
        return lambda events: "error" in json.loads(events[-1][1])
    if client == "messages":
        return lambda events: events[-1][0] == "error"
    if native:  # the upstream's own event: ``response.failed``, or ``error`` alone
        own = "error" if mode == "error_event_plain" else "response.failed"
        return lambda events: events[-1][0] == own
    return lambda events: [name for name, _ in events[-2:]] == ["error", "response.failed"]


@pytest.mark.parametrize(("client", "upstream_api", "mode"), _failing_cases())
async def test_a_stream_that_fails_upstream_ends_with_the_client_api_s_error_event(
    pairs: Pairs, client: str, upstream_api: str, mode: str
) -> None:
    idle = 0.3 if mode == "stalled" else 60.0
    resp = await pairs.stream(client, upstream_api, lambda api: _failing(api, mode), idle)
    assert resp.status == 200
    events = _events(await resp.read())
    assert pairs.fake.apis == [upstream_api]
    assert _successes(events) == []
    assert _failure_ending(client, upstream_api, mode)(events), events[-2:]
    if mode.startswith("error_event"):
        assert OVERLOADED in events[-1][1]
    elif mode == "stalled":
        assert "stopped sending" in events[-1][1]
    line = await pairs.access_line(client)
    assert line["status"] == 200 and line["error"], line


@pytest.mark.parametrize("mode", ["length", "after_the_end", "after_the_end_apart"])
@EVERY_PAIR
async def test_a_complete_answer_ends_once_with_its_success_event_and_its_reason(
    pairs: Pairs, client: str, upstream_api: str, mode: str
) -> None:
    resp = await pairs.stream(client, upstream_api, lambda api: _complete(api, mode))
    events = _events(await resp.read())
    cut = mode == "length"
    # Nothing the upstream sent after its final event reaches the client.
    assert all(OVERLOADED not in data and name != "error" for name, data in events), events
    ends = {
        "chat": ["[DONE]"],
        "messages": ["message_stop"],
        "responses": ["response.incomplete" if cut else "response.completed"],
    }
    assert _successes(events) == ends[client] and _successes(events[-1:]) == ends[client]
    if client == "chat":
        (reason,) = [
            choice["finish_reason"]
            for _, data in events[:-1]
            for choice in json.loads(data)["choices"]
            if choice["finish_reason"]
        ]
        assert reason == ("length" if cut else "stop")
    elif client == "messages":
        (delta,) = [json.loads(data) for name, data in events if name == "message_delta"]
        assert delta["delta"]["stop_reason"] == ("max_tokens" if cut else "end_turn")
    else:
        final = json.loads(events[-1][1])["response"]
        why = {"reason": "max_output_tokens"} if cut else None
        assert final["incomplete_details"] == why
    line = await pairs.access_line(client)
    assert line["status"] == 200 and "error" not in line, line


def _leaving(api: str, sending: bool) -> Script:
    """An answer that has started, and then waits, or goes on for as long as it is read."""
    events = ANSWERS[api](False)
    if sending:  # a piece (the last of ``CUT``) again and again: the gateway is writing
        return Script([*events[:CUT], *[events[CUT - 1]] * 20_000])
    return Script(events[:CUT], "stall")


@pytest.mark.parametrize("sending", [False, True], ids=["waiting", "sending"])
@EVERY_PAIR
async def test_a_client_that_leaves_cancels_the_upstream_and_is_logged_as_gone(
    pairs: Pairs, client: str, upstream_api: str, sending: bool
) -> None:
    resp = await pairs.stream(client, upstream_api, lambda api: _leaving(api, sending))
    assert await asyncio.wait_for(resp.content.readany(), 5)
    resp.close()  # the client walks away mid-stream
    await asyncio.wait_for(pairs.fake.cancelled.wait(), 3)
    # Whether the gateway learns it from a failed write or from aiohttp, the same ending.
    line = await pairs.access_line(client)
    assert line["status"] == 499 and "error" not in line, line
    errors = [r.getMessage() for r in pairs.caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
