"""Upstream failures: HTTP errors before the first byte, error events after it."""

from __future__ import annotations

import asyncio

import aiohttp

from aichat.answer.state import SETTINGS
from tests.conftest import Gateway, GatewayFactory
from tests.fakes import FakeAichats, json_events, sse_events

HELLO = [{"role": "user", "content": "Say hello"}]


async def _error(resp: aiohttp.ClientResponse) -> dict[str, object]:
    body = await resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


async def test_upstream_5xx_before_start_is_502(gateway: Gateway, fake: FakeAichats) -> None:
    fake.status = 503
    for stream in (False, True):
        resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": stream})
        assert resp.status == 502
        error = await _error(resp)
        assert error["code"] == "upstream_error"
        assert "503" in str(error["message"])


async def test_upstream_unreachable_is_502(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(aichats_base_url="http://127.0.0.1:9")  # discard port: refused
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert resp.status == 502
    assert (await _error(resp))["code"] == "upstream_error"


async def test_upstream_silent_before_start_is_504(
    make_gateway: GatewayFactory, fake: FakeAichats
) -> None:
    fake.delay_before = 5
    gateway = await make_gateway(first_byte_timeout=0.3)
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert resp.status == 504
    assert (await _error(resp))["code"] == "upstream_timeout"


async def test_upstream_stalling_before_first_piece_is_504(
    make_gateway: GatewayFactory, fake: FakeAichats
) -> None:
    fake.stall_after = 0  # headers sent, then nothing
    gateway = await make_gateway(first_byte_timeout=0.3)
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    assert resp.status == 504


async def test_upstream_empty_answer_is_502(gateway: Gateway, fake: FakeAichats) -> None:
    fake.raw = b""
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert resp.status == 502


async def test_drop_after_start_ends_with_error_event_not_done(
    gateway: Gateway, fake: FakeAichats
) -> None:
    fake.chunk_size = 12
    fake.drop_after = 2
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert resp.status == 200
    raw = await resp.read()
    assert "[DONE]" not in sse_events(raw)
    events = json_events(raw)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1]["error"]["code"] == "upstream_error"
    assert all(e.get("choices", [{}])[0].get("finish_reason") is None for e in events[:-1])


async def test_stall_after_start_ends_with_timeout_event(
    make_gateway: GatewayFactory, fake: FakeAichats
) -> None:
    fake.chunk_size = 12
    fake.stall_after = 2
    gateway = await make_gateway(idle_timeout=0.3)
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    raw = await resp.read()
    assert "[DONE]" not in sse_events(raw)
    assert json_events(raw)[-1]["error"]["code"] == "upstream_timeout"


async def test_drop_mid_answer_without_stream_is_502(gateway: Gateway, fake: FakeAichats) -> None:
    fake.chunk_size = 12
    fake.drop_after = 2
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    assert resp.status == 502


async def test_client_disconnect_cancels_upstream_at_once(
    gateway: Gateway, fake: FakeAichats
) -> None:
    fake.gate = asyncio.Event()  # the upstream holds the rest of the answer back
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    first = await asyncio.wait_for(resp.content.readline(), 5)
    assert first.startswith(b"data: ")
    resp.close()  # the client walks away mid-stream
    await asyncio.wait_for(fake.cancelled.wait(), 3)
    assert not fake.finished.is_set()


async def test_slow_upstream_does_not_stall_other_clients(
    gateway: Gateway, fake: FakeAichats
) -> None:
    fake.delay_before = 1.0
    slow = asyncio.create_task(gateway.post_chat({"model": "gpt-4o", "messages": HELLO}))
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    resp = await gateway.http.get(f"{gateway.url}/health")
    assert resp.status == 200
    assert asyncio.get_running_loop().time() - started < 0.5
    assert (await slow).status == 200


async def test_upstream_gets_browser_headers_and_history(
    gateway: Gateway, fake: FakeAichats
) -> None:
    resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO})
    assert resp.status == 200
    assert fake.requests == [
        {"type": "chat", "messagesHistory": [{"from": "you", "content": "Say hello"}]}
    ]
    headers = fake.headers[0]
    assert headers["Accept"] == "application/json, text/event-stream"
    assert headers["Content-Type"] == "application/json"
    assert headers["Origin"] == gateway.app[SETTINGS].aichats_base_url
    assert headers["Referer"].endswith("/chat/")
    assert "Mozilla" in headers["User-Agent"]
