"""Hostile input to the features of the third review: namespace tools, budgets, usage
metering, discovery, reasoning. Each attack gets a bounded, honest answer, and the gateway
stays responsive: time is measured in CPU seconds of this process (the gateway runs in it),
with margins of ten and more over what the code needs.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import string
import time
import tracemalloc
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from aichat.core.config import KeyConfig, ModelConfig, PriceConfig
from aichat.operations import budgets
from aichat.providers import reported
from tests.conftest import API_KEY, Gateway, GatewayFactory, _start
from tests.fakes import FakeOpenAI
from tests.fakes_native import FakeAnthropic
from tests.fuzz.wire import exchange, http_request, openai_error

AUTH = (b"Authorization", f"Bearer {API_KEY}".encode())
JSON = (b"Content-Type", b"application/json")
ROUTES = (ModelConfig(name="gpt-4o", provider="mock"),)
# The gateway's own code logs no error for any of these requests.
pytestmark = pytest.mark.usefixtures("no_aichat_errors")


def responses(body: dict[str, object]) -> bytes:
    """A Responses API request with the test key."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return http_request("POST", "/v1/responses", data, [AUTH, JSON])


async def test_namespace_tools_of_one_name_are_flattened_in_linear_time(
    make_gateway: GatewayFactory,
) -> None:
    # 6,000 tools flattening to one name froze the gateway for 61 s (each tried every
    # suffix taken before it); a model that does not exist did not help.
    gateway = await make_gateway(routes=ROUTES)
    tool = {"type": "function", "name": "run", "parameters": {"type": "object"}}
    spaces = [{"type": "namespace", "name": "ns", "tools": [tool] * 3_000}] * 2
    cpu = time.process_time()
    for model in ("gpt-4o", "no-such-model"):
        answer = await exchange(
            gateway.url, responses({"model": model, "input": "hi", "tools": spaces})
        )
        if model == "gpt-4o":
            assert answer.status == 200, answer.body[:300]
        else:
            assert openai_error(answer, 404)["code"] == "model_not_found"
    assert time.process_time() - cpu < 3, "flattening namespace tools took seconds of CPU"


async def burst(url: str, body: dict[str, object], headers: dict[str, str], n: int) -> Counter[int]:
    """The statuses of ``n`` requests sent at once, each on a connection of its own."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one() -> int:
            async with http.post(url, json=body, headers=headers) as answer:
                await answer.read()
                return answer.status

        return Counter(await asyncio.gather(*(one() for _ in range(n))))


async def test_many_tool_results_are_translated_for_a_messages_upstream_in_linear_time(
    make_gateway: GatewayFactory, claude_up: tuple[FakeAnthropic, str]
) -> None:
    # Each tool result went before its user turn's text after a scan of the results before
    # it: one 960 KB chat request of 20,000 results held the event loop for about 8 s before
    # anything reached the upstream (the harness did not cover translations for upstreams).
    fake, url = claude_up
    route = ModelConfig(name="claude", provider="anthropic", base_url=url, api_key="sk-up")
    gateway = await make_gateway(routes=(route,))
    results = [{"role": "tool", "tool_call_id": "c", "content": ""}] * 20_000
    hi = {"role": "user", "content": "hi"}
    body = {"model": "claude", "messages": [hi, *results, hi]}
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    data = json.dumps(body, separators=(",", ":"))  # 960 KB, under the 1 MiB limit
    cpu = time.process_time()
    async with gateway.http.post(
        f"{gateway.url}/v1/chat/completions", data=data, headers=headers
    ) as answer:
        assert answer.status == 200, await answer.text()
    assert time.process_time() - cpu < 3, "translating tool results took seconds of CPU"
    ((turn,),) = [request["messages"] for request in fake.requests]
    assert [block["type"] for block in turn["content"]] == ["tool_result"] * 20_000 + ["text"] * 2


def _dense_text(chars: int) -> str:
    """Text of about three tokens per four characters, with nothing JSON must escape."""
    alphabet = string.ascii_letters + string.digits + "!#$%&()*+,-./:;<=>?@[]^_{|}~ "
    return "".join(random.Random(0).choices(alphabet, k=chars))


@pytest.mark.parametrize(
    "text",
    [_dense_text(450_000), "a" * 1_000_000],
    ids=["over-200k-tokens", "a-million-characters"],
)
async def test_prompts_the_tokenizer_refuses_are_counted_on_every_api(
    make_gateway: GatewayFactory, text: str
) -> None:
    # Under the 1 MiB body limit, yet past what the tokenizer encodes (a million
    # characters, 200,000 tokens): each of these was a 500 and a traceback.
    gateway = await make_gateway(routes=ROUTES)
    headers = {"Authorization": f"Bearer {API_KEY}", "anthropic-version": "2023-06-01"}
    messages = [{"role": "user", "content": text}]
    calls: list[tuple[str, dict[str, object]]] = [
        ("/v1/chat/completions", {"model": "gpt-4o", "messages": messages}),
        ("/v1/responses", {"model": "gpt-4o", "input": text}),
        ("/v1/messages", {"model": "gpt-4o", "max_tokens": 5, "messages": messages}),
        (
            "/v1/messages",
            {"model": "gpt-4o", "max_tokens": 5, "messages": messages, "stream": True},
        ),
        ("/v1/messages/count_tokens", {"model": "gpt-4o", "messages": messages}),
    ]
    for path, body in calls:
        async with gateway.http.post(gateway.url + path, json=body, headers=headers) as answer:
            assert answer.status == 200, (path, await answer.text())
            if path.endswith("count_tokens"):
                assert (await answer.json())["input_tokens"] > len(text) // 5
            else:
                await answer.read()


@pytest.mark.parametrize("failure", ["open", "closed"])
async def test_a_burst_on_a_spent_budget_is_refused_whole_with_redis_healthy(
    make_gateway: GatewayFactory, failure: str, redis_url: str
) -> None:
    # 300 at once on a spent budget: the budgets' own pool (redis-py's default, raising
    # when empty) read as Redis being down, so ~200 were answered (open) or got 503 (closed).
    spent = KeyConfig(name="spent", key_env="X", key="sk-spent-0123456789", tokens_per_day=1)
    gateway = await make_gateway(
        routes=ROUTES,
        keys=(spent,),
        redis_url=redis_url,
        redis_prefix=f"aichat-test:{uuid.uuid4().hex}:",
        redis_failure=failure,
        redis_max_connections=10,
        queue_timeout=30,  # exact answers are the point, not a loaded machine's pace
    )
    headers = {"Authorization": "Bearer sk-spent-0123456789"}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    url = f"{gateway.url}/v1/chat/completions"
    async with gateway.http.post(url, json=body, headers=headers) as first:
        assert first.status == 200, await first.text()

    statuses = await burst(url, body, headers, 300)
    assert statuses == {429: 300}


async def test_an_increment_redis_refuses_is_dropped_and_the_rest_counted_once(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    # A stored count at 2^63 - 1 (or an upstream's 2^63 tokens) made Redis refuse one
    # increment of the usage writer's batch; the batch was retried every second with its
    # other increments applied each time, so every stored count climbed for ever.
    monkeypatch.setattr(budgets, "RETRY_WRITE", 0.05)
    prefix = f"aichat-test:{uuid.uuid4().hex}:"
    capped = KeyConfig(
        name="capped", key_env="X", key="sk-capped-0123456789", tokens_per_month=10**6
    )
    gateway = await make_gateway(
        routes=ROUTES, keys=(capped,), redis_url=redis_url, redis_prefix=prefix
    )
    day, month = (
        f"{prefix}usage:{kind}:{window}"
        for kind, window in zip(budgets.WINDOWS, budgets.window_ids(time.time()), strict=True)
    )
    redis = Redis.from_url(redis_url)
    try:
        await redis.hset(day, "capped", 2**63 - 1)
        answer = await gateway.post_chat(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            key="sk-capped-0123456789",
        )
        assert answer.status == 200
        await asyncio.sleep(1)  # twenty retries, had the batch been retried
        stored = {
            kind: await redis.hgetall(name) for kind, name in (("day", day), ("month", month))
        }
    finally:
        await redis.delete(day, month)
        await redis.aclose()
    assert stored["day"] == {b"capped": str(2**63 - 1).encode()}  # refused, dropped
    assert stored["month"] == {b"capped": b"8"}


def _claims_usage(completion_tokens: str) -> web.Application:
    """An upstream whose answers, streamed or whole, claim ``completion_tokens`` (JSON as
    sent) under a usage key spelled with an escape, which the quick check used to pass over."""
    usage = f'"\\u0075sage":{{"prompt_tokens":5,"completion_tokens":{completion_tokens}}}'

    async def answer(request: web.Request) -> web.StreamResponse:
        head = '{"id":"c","created":0,"model":"m",'
        if not (await request.json()).get("stream"):
            message = '{"role":"assistant","content":"ok"}'
            choice = f'{{"index":0,"message":{message},"finish_reason":"stop"}}'
            whole = f'{head}"object":"chat.completion","choices":[{choice}],{usage}}}'
            return web.Response(text=whole, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = f'{head}"object":"chat.completion.chunk","choices":'
        delta = '[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]'
        for data in (f"{chunk}{delta}}}", f"{chunk}[],{usage}}}", "[DONE]"):
            await response.write(f"data: {data}\n\n".encode())
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    return app


@pytest.mark.parametrize(
    "claimed",
    ["-1000005", str(2**63), "1e8", "100000001"],
    ids=["negative", "2**63", "float", "huge"],
)
async def test_usage_an_upstream_claims_out_of_bounds_is_counted_by_the_gateway(
    make_gateway: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    claimed: str,
) -> None:
    # Sent by a real upstream on every path (streamed and whole, the key escaped): one answer
    # claiming -1,000,005 tokens refunded them (992 answers more on a budget of 1,000 a day;
    # aichat_tokens_total went negative); 2^63 broke the usage writer and the history.
    monkeypatch.setattr(reported, "_warned_at", -math.inf)  # whatever earlier tests warned
    runner, url = await _start(_claims_usage(claimed))
    capped = KeyConfig(name="capped", key_env="X", key="sk-capped-0123456789", tokens_per_day=1000)
    route = ModelConfig(name="up", provider="openai", base_url=f"{url}/v1")
    gateway = await make_gateway(routes=(route,), keys=(capped,))
    hi = [{"role": "user", "content": "hi"}]
    remaining = []
    try:
        for stream in (True, False, True):
            answer = await gateway.post_chat(
                {"model": "up", "messages": hi, "stream": stream}, key="sk-capped-0123456789"
            )
            assert answer.status == 200, await answer.text()
            await answer.read()
            remaining.append(int(answer.headers["x-aichat-budget-remaining-tokens-day"]))
    finally:
        await runner.cleanup()
    tokens = {
        line.split('kind="')[1].split('"')[0]: float(line.split()[-1])
        for line in await _metric_lines(gateway, "aichat_tokens_total")
        if 'key="capped"' in line
    }
    # Counted as for an upstream that reports nothing: the prompt's tokens and one a chunk.
    assert 3 <= tokens["prompt"] <= 30 and 1 <= tokens["completion"] <= 10, tokens
    assert remaining[0] == 1000 and 1000 - 60 <= remaining[2] < remaining[1] < 1000
    ignored = [r for r in caplog.records if r.getMessage().startswith("upstream usage ignored")]
    assert len(ignored) == 1  # once, not once an answer


@pytest.mark.parametrize(
    "retry_after", ["1e400", "inf", "-1e400", "9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"]
)
async def test_an_upstreams_retry_after_is_believed_only_within_a_day(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str], retry_after: str
) -> None:
    # An infinite Retry-After made the gateway's passed-on 429 a 500 and a traceback; a
    # huge one reached the client as hundreds of digits.
    fake, url = openai_upstream
    fake.status = 429
    fake.error_headers = {"Retry-After": retry_after}
    route = ModelConfig(name="up", provider="openai", base_url=url)
    gateway = await make_gateway(routes=(route,), retries=0)
    answer = await gateway.post_chat(
        {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert answer.status == 429, await answer.text()
    assert "Retry-After" not in answer.headers


@pytest.mark.parametrize(
    ("path", "model"),
    [("/v1/responses", "up"), ("/v1/messages", "up"), ("/v1/chat/completions", "stripped")],
    ids=["responses", "messages", "strip"],
)
async def test_a_whitespace_only_answer_is_passed_on_in_linear_time(
    make_gateway: GatewayFactory,
    openai_upstream: tuple[FakeOpenAI, str],
    path: str,
    model: str,
) -> None:
    # Whitespace that might still precede <think> was held and re-read for every piece:
    # 5 MB took 29 s of the event loop, 20 MB about 6 minutes.
    fake, url = openai_upstream
    fake.text_pieces = [" " * 512] * 10_000  # 5 MB
    routes = (
        ModelConfig(name="up", provider="openai", base_url=url),
        ModelConfig(name="stripped", provider="openai", base_url=url, reasoning="strip"),
    )
    gateway = await make_gateway(routes=routes)
    headers = {"Authorization": f"Bearer {API_KEY}", "anthropic-version": "2023-06-01"}
    body: dict[str, object] = {"model": model, "stream": True, "max_tokens": 5}
    body["input" if path == "/v1/responses" else "messages"] = [{"role": "user", "content": "hi"}]
    cpu = time.process_time()
    async with gateway.http.post(gateway.url + path, json=body, headers=headers) as answer:
        assert answer.status == 200, await answer.text()
        data = await answer.read()
    assert time.process_time() - cpu < 3, "a blank answer took seconds of CPU"
    assert data.count(b" " * 512) >= 10_000  # and it reached the client


@dataclass
class Lister:
    """An upstream that lists its models as told, and answers chats with one of them."""

    ids: list[str]
    redirect_to: str | None = None
    piece: int = 16 * 1024  # bytes per write, each after a pause: many network reads
    authorizations: list[str | None] = field(default_factory=list)

    async def models(self, request: web.Request) -> web.StreamResponse:
        self.authorizations.append(request.headers.get("Authorization"))
        if self.redirect_to is not None:
            raise web.HTTPTemporaryRedirect(self.redirect_to)
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "x"} for i in self.ids]
        body = json.dumps({"object": "list", "data": data}).encode()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for start in range(0, len(body), self.piece):
            await response.write(body[start : start + self.piece])
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    async def start(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        runner, url = await _start(app)
        return runner, f"{url}/v1"

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        message = {"role": "assistant", "content": body["model"]}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return web.json_response({"object": "chat.completion", "model": "m", "choices": [choice]})


async def _discovered(make_gateway: GatewayFactory, url: str) -> set[str]:
    route = ModelConfig(
        name="d", provider="openai", base_url=url, models="discover", api_key="sk-upstream"
    )
    gateway = await make_gateway(routes=(route,))
    async with gateway.http.get(
        f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}
    ) as answer:
        return {model["id"] for model in (await answer.json())["data"]}


async def test_a_list_of_models_is_read_to_its_end_over_many_network_reads(
    make_gateway: GatewayFactory,
) -> None:
    # Only the first network read was parsed: a valid 268 KB list of 1,000 ids was "not JSON".
    lister = Lister([f"model-{i:04d}-" + "x" * 200 for i in range(1_000)])
    runner, url = await lister.start()
    try:
        assert len(await _discovered(make_gateway, url)) == 1_000
    finally:
        await runner.cleanup()


async def test_discovery_follows_no_redirect_to_another_host(
    make_gateway: GatewayFactory,
) -> None:
    elsewhere = Lister(["planted"])
    runner_b, url_b = await elsewhere.start()
    lister = Lister(["real"], redirect_to=f"{url_b}/models")
    runner_a, url_a = await lister.start()
    try:
        assert await _discovered(make_gateway, url_a) == set()
    finally:
        await runner_a.cleanup()
        await runner_b.cleanup()
    assert lister.authorizations == ["Bearer sk-upstream"]
    assert elsewhere.authorizations == []  # the route's key never left for another host


async def test_a_listed_id_with_control_characters_is_skipped(
    make_gateway: GatewayFactory,
) -> None:
    # It became the x-aichat-upstream header of every answer: a 500 and a traceback each.
    lister = Lister(["fine", "evil\r\nX-Injected: 1", "tab\there", "nul\x00"])
    runner, url = await lister.start()
    try:
        assert await _discovered(make_gateway, url) == {"fine"}
    finally:
        await runner.cleanup()


async def _metric_lines(gateway: Gateway, name: str) -> list[str]:
    async with gateway.http.get(f"{gateway.url}/metrics") as answer:
        text = await answer.text()
    return sorted(line for line in text.splitlines() if line.startswith(name + "{"))


async def test_error_codes_an_upstream_sends_are_no_metric_labels(
    make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    # Each distinct code became a series: 20,000 codes, an 84 MB /metrics.
    fake, url = openai_upstream
    fake.status = 503
    gateway = await make_gateway(
        routes=(ModelConfig(name="up", provider="openai", base_url=url),),
        retries=0,
        breaker_failures=0,  # every request reaches the upstream
    )
    for i in range(30):
        error = {"message": "no", "type": "server_error", "code": f"code-{i}", "param": None}
        fake.error_body = {"error": error}
        answer = await gateway.post_chat(
            {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert answer.status == 503
    assert await _metric_lines(gateway, "aichat_upstream_errors_total") == [
        'aichat_upstream_errors_total{code="other",upstream="up (openai)"} 30.0'
    ]


async def test_discovered_models_are_counted_under_their_discovery_route(
    make_gateway: GatewayFactory,
) -> None:
    lister = Lister([f"listed-{i}" for i in range(5)])
    runner, url = await lister.start()
    try:
        route = ModelConfig(name="d", provider="openai", base_url=url, models="discover")
        gateway = await make_gateway(routes=(route,))
        for i in range(5):
            answer = await gateway.post_chat(
                {"model": f"listed-{i}", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert answer.headers["x-aichat-upstream"] == f"listed-{i} (openai)"
    finally:
        await runner.cleanup()
    assert await _metric_lines(gateway, "aichat_requests_total") == [
        'aichat_requests_total{model="d",status="200",upstream="d (openai)"} 5.0'
    ]
    assert await _metric_lines(gateway, "aichat_circuit_state") == [
        'aichat_circuit_state{upstream="d (openai)"} 0.0'
    ]


@pytest.mark.parametrize("path", ["/metrics", "/ready?verbose=1", "/health"])
async def test_operational_endpoints_are_not_readable_by_web_pages(
    make_gateway: GatewayFactory, path: str
) -> None:
    # Without a metrics key, any page a user visited could read every route and upstream.
    gateway = await make_gateway(routes=ROUTES)  # AICHAT_CORS_ORIGINS: "*", the default
    origin = {"Origin": "https://evil.example"}
    async with gateway.http.get(gateway.url + path, headers=origin) as answer:
        assert answer.status == 200
        assert "Access-Control-Allow-Origin" not in answer.headers
    preflight = {**origin, "Access-Control-Request-Method": "GET"}
    async with gateway.http.options(gateway.url + path, headers=preflight) as answer:
        assert "Access-Control-Allow-Origin" not in answer.headers
    async with gateway.http.get(f"{gateway.url}/v1/models", headers=origin) as api:
        assert api.headers["Access-Control-Allow-Origin"] in ("*", "https://evil.example")


async def _endless(request: web.Request) -> web.StreamResponse:
    """10 MB of reasoning or text in 10,000 chunks, made as they are sent."""
    field = "reasoning_content" if (await request.json())["model"] == "thinks" else "content"
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    delta = {"index": 0, "delta": {field: "x" * 1000}, "finish_reason": None}
    line = b"data: " + json.dumps({**chunk, "choices": [delta]}).encode() + b"\n\n"
    for _ in range(10_000):
        await response.write(line)
    end = {"index": 0, "delta": {}, "finish_reason": "stop"}
    await response.write(b"data: " + json.dumps({**chunk, "choices": [end]}).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    return response


@pytest.mark.parametrize("api", ["responses", "messages"])
async def test_a_huge_streamed_answer_costs_bounded_memory(
    make_gateway: GatewayFactory, api: str
) -> None:
    # A Responses stream kept everything it sent (50 MB of reasoning: +300 MB); a Messages
    # stream kept every block's text too, which it never repeats.
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _endless)
    runner, url = await _start(app)
    routes = tuple(
        ModelConfig(name=name, provider="openai", base_url=f"{url}/v1")
        for name in ("thinks", "talks")
    )
    gateway = await make_gateway(routes=routes, max_answer_bytes=1024 * 1024)
    headers = {"Authorization": f"Bearer {API_KEY}", "anthropic-version": "2023-06-01"}
    hi = [{"role": "user", "content": "hi"}]
    if api == "responses":
        path, body = "/v1/responses", {"model": "thinks", "input": hi, "stream": True}
    else:
        path = "/v1/messages"
        body = {"model": "talks", "max_tokens": 5, "messages": hi, "stream": True}
    tracemalloc.start()  # the peak of what Python allocates meanwhile, whatever came before
    try:
        async with gateway.http.post(gateway.url + path, json=body, headers=headers) as answer:
            assert answer.status == 200
            tail = b""
            async for piece in answer.content.iter_any():
                tail = (tail + piece)[-4096:]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await runner.cleanup()
    assert peak < 20 * 1024 * 1024
    if api == "responses":  # it must repeat all of it at its end: past the bound, it fails
        assert b"event: response.failed" in tail
        assert b"AICHAT_MAX_ANSWER_BYTES" in tail
    else:  # nothing to repeat: the whole answer streams
        assert tail.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


@pytest.mark.parametrize("unit", ["tokens", "usd"])
@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_parallel_requests_cannot_spend_a_budget_many_times_over(
    make_gateway: GatewayFactory, store: str, unit: str, request: pytest.FixtureRequest
) -> None:
    # Budgets were checked only as each request started: 200 at once spent 202,000 tokens
    # of a 1,000 a day. In money: a dollar per thousand tokens, and a budget of a dollar.
    dear = PriceConfig(input=Decimal(1000), output=Decimal(1000))
    talker = ModelConfig(
        name="talker", provider="mock", text="w " * 50, tokens_per_second=100, price=dear
    )
    budget = {"tokens_per_day": 1000} if unit == "tokens" else {"usd_per_day": Decimal(1)}
    capped = KeyConfig(name="capped", key_env="X", key="sk-capped-0123456789", **budget)
    redis = {}
    if store == "redis":
        prefix = f"aichat-test:{uuid.uuid4().hex}:"
        redis = {"redis_url": request.getfixturevalue("redis_url"), "redis_prefix": prefix}
    gateway = await make_gateway(routes=(talker,), keys=(capped,), **redis)
    headers = {"Authorization": "Bearer sk-capped-0123456789"}
    # Each holds its prompt (7 tokens) and max_tokens (60) while it runs; each spends 57.
    body = {"model": "talker", "max_tokens": 60, "messages": [{"role": "user", "content": "hi"}]}
    url = f"{gateway.url}/v1/chat/completions"

    statuses = await burst(url, body, headers, 200)
    spent = sum(
        float(line.split()[-1])
        for line in await _metric_lines(gateway, "aichat_tokens_total")
        if 'key="capped"' in line and ('kind="prompt"' in line or 'kind="completion"' in line)
    )
    (dollars,) = [
        float(line.split()[-1]) for line in await _metric_lines(gateway, "aichat_spend_usd_total")
    ]
    assert dollars == pytest.approx(spent / 1000)
    assert set(statuses) == {200, 429}
    assert statuses[200] >= 1000 // 67  # as many as the budget holds
    assert spent <= 1000 + 67  # at most the last one's worst case past the budget
