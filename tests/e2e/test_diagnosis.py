"""What a user sees when an upstream fails: the cause, the circuit, and where to look."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from aichat.core.config import ModelConfig
from tests.conftest import Gateway, GatewayFactory
from tests.deploy.procs import free_port
from tests.fakes import FakeAichats

HELLO = [{"role": "user", "content": "hi"}]
METRICS_KEY = "sk-metrics-0123"


def _fields(caplog: pytest.LogCaptureFixture, logger: str, message: str) -> list[dict[str, Any]]:
    return [
        dict(getattr(record, "fields", {}))
        for record in caplog.records
        if record.name == logger and record.getMessage() == message
    ]


async def _error(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    error: dict[str, Any] = (await resp.json())["error"]
    return error


async def test_unreachable_upstream_error_names_host_and_cause(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    gateway = await make_gateway(aichats_base_url=f"http://127.0.0.1:{port}", retry_backoff=0.001)
    with caplog.at_level(logging.INFO):
        resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    assert resp.status == 502
    message = (await _error(resp))["message"]
    assert message.startswith(f"aichats upstream unreachable: cannot connect to 127.0.0.1:{port}")
    assert "refused" in message.lower()
    attempts = _fields(caplog, "aichat.failover", "upstream attempt failed")
    assert len(attempts) == 3  # the first try and AICHAT_RETRIES=2
    assert all(f"127.0.0.1:{port}" in a["cause"] for a in attempts)
    # The access line of a request that failed on every attempt still says where and how often.
    (access,) = _fields(caplog, "aichat.access", "request")
    assert access["upstream"] == "gpt-4o (aichats)"
    assert access["attempts"] == 3
    assert access["error"] == "upstream_error"


async def test_tls_to_a_plain_http_upstream_is_named_as_tls(
    make_gateway: GatewayFactory, upstream: tuple[FakeAichats, str]
) -> None:
    https_url = upstream[1].replace("http://", "https://")
    gateway = await make_gateway(aichats_base_url=https_url, retries=0)
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    assert resp.status == 502
    assert "TLS handshake with 127.0.0.1:" in (await _error(resp))["message"]


async def test_status_and_timeout_errors_name_the_upstream(
    make_gateway: GatewayFactory, upstream: tuple[FakeAichats, str], fake: FakeAichats
) -> None:
    where = upstream[1].removeprefix("http://")
    gateway = await make_gateway(retries=0, first_byte_timeout=0.2)
    fake.status = 503
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    assert (await _error(resp))["message"].startswith(f"aichats upstream {where} answered HTTP 503")
    fake.status, fake.delay_before = 200, 2
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    assert resp.status == 504
    assert f"{where} sent nothing for 0.2 s" in (await _error(resp))["message"]


async def test_circuit_counts_requests_not_attempts_and_explains_itself(
    make_gateway: GatewayFactory, fake: FakeAichats, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await make_gateway(
        retries=2, retry_backoff=0.001, breaker_failures=2, breaker_cooldown=30
    )
    fake.status = 500
    with caplog.at_level(logging.INFO):
        first = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
        # Three failed attempts, one failed request: still closed, the real error shown.
        assert first.status == 502
        assert len(fake.requests) == 3
        assert (
            _fields(caplog, "aichat.failover", "circuit opened: requests skip this upstream") == []
        )
        second = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
        assert second.status == 502
        (opened,) = _fields(
            caplog, "aichat.failover", "circuit opened: requests skip this upstream"
        )
    assert opened["upstream"] == "gpt-4o (aichats)"
    assert "HTTP 500 from 127.0.0.1:" in opened["last_error"]
    fast = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    assert fast.status == 503
    assert len(fake.requests) == 6  # not tried while open
    error = await _error(fast)
    assert error["code"] == "upstream_unavailable"
    assert "gpt-4o (aichats): HTTP 500 from 127.0.0.1:" in error["message"]
    # Retry-After is the cooldown still to run, not a fixed guess.
    assert 28 <= int(fast.headers["Retry-After"]) <= 30


async def test_circuit_transitions_are_logged_half_open_then_closed(
    make_gateway: GatewayFactory, fake: FakeAichats, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await make_gateway(retries=0, breaker_failures=1, breaker_cooldown=0.2)
    fake.status = 502
    with caplog.at_level(logging.INFO, logger="aichat.failover"):
        assert (await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})).status == 502
        fake.status = 200
        await asyncio.sleep(0.25)
        assert (await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})).status == 200
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("circuit")]
    assert messages == [
        "circuit opened: requests skip this upstream",
        "circuit half-open: one trial request goes through",
        "circuit closed: the upstream answers again",
    ]
    closed = _fields(caplog, "aichat.failover", "circuit closed: the upstream answers again")
    assert "HTTP 502" in closed[0]["last_error"]


async def _ready(gateway: Gateway, **headers: str) -> aiohttp.ClientResponse:
    return await gateway.http.get(f"{gateway.url}/ready?verbose=1", headers=headers)


async def test_ready_verbose_lists_each_upstream_circuit_and_last_error(
    make_gateway: GatewayFactory, fake: FakeAichats
) -> None:
    routes = (
        ModelConfig(name="gpt-4o", provider="aichats"),
        ModelConfig(name="demo", provider="mock", text="hi"),
    )
    gateway = await make_gateway(routes=routes, retries=0, breaker_failures=1)
    fake.status = 500
    await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    resp = await _ready(gateway)
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ready"
    aichats, demo = body["upstreams"]
    assert aichats["model"] == "gpt-4o"
    assert aichats["upstream"] == "gpt-4o (aichats)"
    assert aichats["state"] == "open"
    assert aichats["consecutive_failures"] == 1
    assert "HTTP 500 from 127.0.0.1:" in aichats["last_error"]
    assert 0 <= aichats["last_error_seconds_ago"] < 5
    assert 0 < aichats["retry_in_seconds"] <= 30
    assert demo == {
        "model": "demo",
        "upstream": "demo (mock)",
        "state": "closed",
        "consecutive_failures": 0,
        "last_error": None,
        "last_error_seconds_ago": None,
        "retry_in_seconds": None,
        "last_answer_seconds_ago": None,  # never asked: not yet known to answer
    }
    await gateway.post_chat({"model": "demo", "messages": HELLO})
    body = await (await _ready(gateway)).json()
    assert 0 <= body["upstreams"][1]["last_answer_seconds_ago"] < 5
    plain = await (await gateway.http.get(f"{gateway.url}/ready?verbose=0")).json()
    assert plain == {"status": "ready"}  # without verbose: nothing about upstreams
    odd = await gateway.http.get(f"{gateway.url}/ready?verbose=yes")
    assert odd.status == 400
    assert (await _error(odd))["param"] == "verbose"


async def test_ready_verbose_needs_the_metrics_key_when_one_is_set(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(metrics_key=METRICS_KEY)
    assert (await gateway.http.get(f"{gateway.url}/ready")).status == 200
    assert (await _ready(gateway)).status == 401
    assert (await _ready(gateway, Authorization="Bearer wrong")).status == 401
    ok = await _ready(gateway, Authorization=f"Bearer {METRICS_KEY}")
    assert ok.status == 200
    assert [u["model"] for u in (await ok.json())["upstreams"]] == ["gpt-4o", "gpt-4o-2024-05-13"]
