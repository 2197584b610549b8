"""The HTTP contract around the chat endpoint: auth, errors, CORS, ids, logs, meta endpoints."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest

from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.fakes import FakeAichats

HELLO = [{"role": "user", "content": "hi"}]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def _error(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return dict(body["error"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": API_KEY},
        {"Authorization": "Basic x"},
    ],
)
async def test_missing_or_wrong_key_is_401(gateway: Gateway, headers: dict[str, str]) -> None:
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
        resp = await gateway.http.request(method, gateway.url + path, headers=headers, json={})
        error = await _error(resp, 401)
        assert error["code"] == "invalid_api_key"


async def test_any_configured_key_works(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(api_keys=("sk-one", "sk-two"))
    for key in ("sk-one", "sk-two"):
        resp = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO}, key=key)
        assert resp.status == 200


async def test_health_ready_and_preflight_need_no_key(gateway: Gateway) -> None:
    assert (await gateway.http.get(f"{gateway.url}/health")).status == 200
    ready = await gateway.http.get(f"{gateway.url}/ready")
    assert ready.status == 200
    assert (await ready.json())["status"] == "ready"
    preflight = await gateway.http.options(
        f"{gateway.url}/v1/chat/completions",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.status in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] in ("*", "https://app.example")
    allowed = preflight.headers["Access-Control-Allow-Headers"].upper()
    assert "AUTHORIZATION" in allowed
    assert "CONTENT-TYPE" in allowed


async def test_cors_headers_on_answers_and_origins_from_config(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(cors_origins=("https://ok.example",))
    ok = await gateway.http.get(
        f"{gateway.url}/v1/models", headers={**AUTH, "Origin": "https://ok.example"}
    )
    assert ok.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    assert "X-REQUEST-ID" in ok.headers["Access-Control-Expose-Headers"].upper()
    other = await gateway.http.get(
        f"{gateway.url}/v1/models", headers={**AUTH, "Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_unknown_path_404_and_wrong_method_405(gateway: Gateway) -> None:
    error = await _error(await gateway.http.get(f"{gateway.url}/v2/nothing", headers=AUTH), 404)
    assert error["code"] == "not_found"
    resp = await gateway.http.get(f"{gateway.url}/v1/chat/completions", headers=AUTH)
    error = await _error(resp, 405)
    assert error["code"] == "method_not_allowed"


async def test_body_over_limit_is_413(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(max_body_bytes=1000)
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 2000}]}
    error = await _error(await gateway.post_chat(big), 413)
    assert error["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"\xff\xfe", None),
        (b"[" * 100_000 + b"]" * 100_000, None),
        (b"[]", None),
        (b'{"messages": []}', "model"),
        (b'{"model": "gpt-4o", "messages": "hi"}', "messages"),
        (b'{"model": "gpt-4o", "messages": []}', "messages"),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]}',
            "messages[0].role",
        ),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]}',
            "messages[0].content",
        ),
        (b'{"model": "gpt-4o", "messages": [{"role": "user"}], "stream": "maybe"}', "stream"),
        (b'{"model": "gpt-4o", "messages": [{"role": "user"}], "temperature": 7}', "temperature"),
    ],
)
async def test_bad_requests_are_400_naming_the_field(
    gateway: Gateway, body: bytes, param: str | None
) -> None:
    resp = await gateway.http.post(
        f"{gateway.url}/v1/chat/completions",
        data=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    error = await _error(resp, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_image_parts_are_refused_not_forwarded(gateway: Gateway, fake: FakeAichats) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    resp = await gateway.post_chat(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    )
    error = await _error(resp, 400)
    assert error["code"] == "unsupported_content"
    assert error["param"] == "messages[0].content[1]"
    assert fake.requests == []


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"messages": [{"role": "tool", "content": "42", "tool_call_id": "c1"}]},
    ],
)
async def test_tools_are_refused_for_aichats(
    gateway: Gateway, fake: FakeAichats, extra: dict[str, Any]
) -> None:
    body = {"model": "gpt-4o", "messages": HELLO, **extra}
    error = await _error(await gateway.post_chat(body), 400)
    assert error["code"] == "unsupported"
    assert fake.requests == []


async def test_text_parts_are_joined_and_unknown_fields_ignored(
    gateway: Gateway, fake: FakeAichats
) -> None:
    content = [{"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}]
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": content}],
        "frequency_penalty": 0.5,
        "some_future_field": {"nested": True},
    }
    assert (await gateway.post_chat(body)).status == 200
    assert fake.requests[0]["messagesHistory"] == [{"from": "you", "content": "line one\nline two"}]


async def test_request_id_is_echoed_or_created(gateway: Gateway) -> None:
    given = await gateway.http.get(f"{gateway.url}/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    created = await gateway.http.get(f"{gateway.url}/health")
    assert len(created.headers["X-Request-ID"]) >= 16
    unsafe = await gateway.http.get(f"{gateway.url}/health", headers={"X-Request-ID": "a b<c>"})
    assert unsafe.headers["X-Request-ID"] != "a b<c>"
    streamed = await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert streamed.headers["X-Request-ID"]


async def test_models_endpoints(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(models=("gpt-4o", "my/model"))
    listing = await (await gateway.http.get(f"{gateway.url}/v1/models", headers=AUTH)).json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["gpt-4o", "my/model"]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in listing["data"])
    one = await gateway.http.get(f"{gateway.url}/v1/models/my/model", headers=AUTH)
    assert (await one.json())["id"] == "my/model"
    missing = await gateway.http.get(f"{gateway.url}/v1/models/nope", headers=AUTH)
    assert (await _error(missing, 404))["code"] == "model_not_found"


async def test_logs_have_one_access_line_and_no_secrets(
    gateway: Gateway, fake: FakeAichats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_text = "my-private-diary-entry-7731"
    fake.pieces = ["answer-with-private-words-9182"]
    await gateway.post_chat(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": secret_text}]}
    )
    await gateway.post_chat({"model": "gpt-4o", "messages": HELLO}, key="sk-guessed-wrong-5521")
    fake.status = 500
    await gateway.post_chat({"model": "gpt-4o", "messages": HELLO, "stream": True})
    everything = caplog.text + json.dumps([getattr(r, "fields", {}) for r in caplog.records])
    for secret in (API_KEY, "sk-guessed-wrong-5521", secret_text, "answer-with-private-words-9182"):
        assert secret not in everything
    access = [r for r in caplog.records if r.name == "aichat.access"]
    assert [r.fields["status"] for r in access] == [200, 401, 502]  # type: ignore[attr-defined]
    first = access[0].fields  # type: ignore[attr-defined]
    assert first["model"] == "gpt-4o"
    assert first["stream"] is False
    assert first["bytes_out"] > 0
    assert first["duration_ms"] >= 0
    assert first["request_id"]
