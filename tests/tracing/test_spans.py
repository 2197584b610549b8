"""The spans a traced gateway sends, as an OTLP receiver gets them, for real SDK clients.

Each API request is a server span; each upstream attempt a client span under it with the
GenAI conventions' attributes; a client's ``traceparent`` is continued and each attempt's
context goes upstream. Tracing off leaves OpenTelemetry unimported; a receiver that is down
changes nothing for clients and is counted.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal

import anthropic
import openai
import pytest

from aichat.core.config import ModelConfig, PriceConfig, StartupError
from aichat.operations.trace_setup import configured_tracing, tracing_wanted
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.deploy.procs import run
from tests.fakes import FakeOpenAI
from tests.tracing.conftest import Natives
from tests.tracing.receiver import Receiver, Span

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
HELLO = [{"role": "user", "content": "Say hello"}]


def routes(url: str) -> tuple[ModelConfig, ...]:
    return (
        ModelConfig(name="up", provider="openai", base_url=url, upstream_model="gpt-up"),
        ModelConfig(name="chained", provider="openai", base_url=url, fallbacks=("echo",)),
        ModelConfig(name="echo", provider="mock", text="Echo here."),
    )


@pytest.fixture
async def gw(
    receiver: Receiver, make_gateway: GatewayFactory, openai_upstream: tuple[FakeOpenAI, str]
) -> Gateway:
    return await make_gateway(routes=routes(openai_upstream[1]), retries=1, retry_backoff=0)


GatewayWith = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def gateway_with(
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    make_gateway: GatewayFactory,
    openai_upstream: tuple[FakeOpenAI, str],
) -> GatewayWith:
    """Makes a gateway of ``routes`` with the OpenTelemetry variables it is given set too."""

    async def make(**variables: str) -> Gateway:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return await make_gateway(routes=routes(openai_upstream[1]))

    return make


def native_routes(natives: Natives) -> tuple[ModelConfig, ...]:
    return (
        ModelConfig(
            name="claude",
            provider="anthropic",
            base_url=natives.claude_url,
            upstream_model="claude-sonnet-4-5",
            price=PriceConfig(
                input=Decimal(3),
                output=Decimal(15),
                cache_read=Decimal("0.3"),
                cache_write=Decimal("3.75"),
            ),
        ),
        ModelConfig(
            name="codex",
            provider="openai",
            api="responses",
            base_url=natives.responses_url,
            upstream_model="gpt-5-codex",
        ),
    )


@pytest.fixture
async def native_gw(receiver: Receiver, make_gateway: GatewayFactory, natives: Natives) -> Gateway:
    return await make_gateway(routes=native_routes(natives), retries=0)


def by_kind(spans: list[Span], kind: str) -> list[Span]:
    return [span for span in spans if span.kind == f"SPAN_KIND_{kind}"]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def test_a_streamed_chat_continues_the_clients_trace_with_genai_attributes(
    receiver: Receiver, gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    async with gw.sdk() as client:
        stream = await client.chat.completions.create(
            model="up",
            messages=HELLO,  # type: ignore[arg-type]
            stream=True,
            max_tokens=50,
            temperature=0.5,
            extra_headers={"traceparent": TRACEPARENT},
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hi from upstream"
    spans = await receiver.wait_for(2)
    (server,), (attempt,) = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    assert (server.trace_id, server.parent_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert (attempt.trace_id, attempt.parent_id) == (CLIENT_TRACE, server.span_id)
    assert server.name == "POST /v1/chat/completions"
    assert server.resource["service.name"] == "aichat"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["aichat.key.name"] == "key-1"
    assert API_KEY not in json.dumps([span.attributes for span in spans])
    assert server.attributes["aichat.route"] == "up"
    assert server.attributes["aichat.time_to_first_token"] > 0
    assert attempt.name == "chat gpt-up"
    port = port_of(openai_upstream[1])
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-up",
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.stream": True,
        "gen_ai.output.type": None,  # no output format asked for
        "gen_ai.request.reasoning.level": None,
        "gen_ai.response.model": "gpt-up",
        "gen_ai.response.id": "chatcmpl-up",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.usage.reasoning.output_tokens": None,  # not reported
        "server.address": "127.0.0.1",
        "server.port": port,
        "aichat.attempt": 1,
    }
    assert {name: attempt.attributes.get(name) for name in expected} == expected
    assert attempt.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert attempt.status == "STATUS_CODE_UNSET"
    # Contents are not recorded unless an operator asks.
    assert not any("messages" in name for span in spans for name in span.attributes)
    # The upstream got the attempt's own context.
    sent = openai_upstream[0].headers[-1]["traceparent"]
    assert sent.split("-")[1:3] == [CLIENT_TRACE, attempt.span_id]


async def test_the_sdks_sampler_and_service_name_apply_and_unsampled_traces_go_on_upstream(
    receiver: Receiver, gateway_with: GatewayWith, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    # New traces are not sampled; a client's trace is, if the client sampled it.
    gateway = await gateway_with(
        OTEL_TRACES_SAMPLER="parentbased_always_off", OTEL_SERVICE_NAME="gateway-eu"
    )
    unsampled_trace = "0af7651916cd43dd8448eb211c80319c"
    async with gateway.sdk() as client:
        for headers in ({}, {"traceparent": f"00-{unsampled_trace}-{CLIENT_SPAN}-00"}):
            await client.chat.completions.create(
                model="up",
                messages=HELLO,  # type: ignore[arg-type]
                extra_headers=headers,
            )
        await client.chat.completions.create(
            model="up",
            messages=HELLO,  # type: ignore[arg-type]
            extra_headers={"traceparent": TRACEPARENT},
        )
    # Spans are sent in the order they end: the first two requests' would have come first.
    spans = await receiver.wait_for(2)
    assert [(span.trace_id, span.resource["service.name"]) for span in spans] == [
        (CLIENT_TRACE, "gateway-eu")
    ] * 2
    # Each upstream request went on with its trace and its decision not to sample it.
    sent = [h["traceparent"].split("-") for h in openai_upstream[0].headers]
    assert [(trace, int(flags, 16) & 1) for _, trace, _, flags in sent] == [
        (sent[0][1], 0),  # the sampled flag, the lowest bit
        (unsampled_trace, 0),
        (CLIENT_TRACE, 1),
    ]


async def test_a_retried_request_shows_each_attempt(
    receiver: Receiver, gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    fake = openai_upstream[0]
    fake.status, fake.fail_times = 500, 1
    async with gw.sdk() as client:
        answer = await client.chat.completions.create(model="up", messages=HELLO)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "Hi from upstream"
    spans = await receiver.wait_for(3)
    (server,) = by_kind(spans, "SERVER")
    failed, answered = sorted(
        by_kind(spans, "CLIENT"), key=lambda s: s.attributes["aichat.attempt"]
    )
    assert failed.parent_id == answered.parent_id == server.span_id
    assert failed.attributes["error.type"] == "500"
    # The server that failed is named too.
    port = port_of(openai_upstream[1])
    assert [
        (s.attributes["server.address"], s.attributes["server.port"]) for s in (failed, answered)
    ] == [("127.0.0.1", port)] * 2
    assert failed.status == "STATUS_CODE_ERROR"
    assert failed.attributes["gen_ai.response.finish_reasons"] == ["error"]
    assert "error.type" not in answered.attributes
    assert answered.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert "gen_ai.request.stream" not in answered.attributes
    assert (server.status, server.attributes["aichat.attempts"]) == ("STATUS_CODE_UNSET", 2)
    # Each attempt sent its own context upstream.
    sent = [headers["traceparent"].split("-")[2] for headers in fake.headers]
    assert sent == [failed.span_id, answered.span_id]


async def test_a_fallback_is_an_attempt_of_its_own_provider_with_dropped_params(
    receiver: Receiver, gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    openai_upstream[0].status = 503
    async with gw.sdk() as client:
        answer = await client.chat.completions.with_raw_response.create(
            model="chained",
            messages=HELLO,  # type: ignore[arg-type]
            max_tokens=20,
        )
    assert answer.parse().choices[0].message.content == "Echo here."
    spans = await receiver.wait_for(4)
    (server,) = by_kind(spans, "SERVER")
    dropped = answer.headers["x-aichat-dropped-params"]
    assert server.attributes["aichat.dropped_params"] == dropped.split(", ") == ["max_tokens"]
    attempts = sorted(by_kind(spans, "CLIENT"), key=lambda s: s.attributes["aichat.attempt"])
    assert [
        (s.attributes["gen_ai.provider.name"], s.attributes.get("error.type")) for s in attempts
    ] == [
        ("openai", "503"),
        ("openai", "503"),
        ("mock", None),
    ]
    assert attempts[-1].attributes["aichat.route"] == "echo"
    assert "server.address" not in attempts[-1].attributes  # the mock makes no HTTP request


async def test_a_failed_request_is_an_error_span_naming_the_cause(
    receiver: Receiver, gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    openai_upstream[0].status = 500
    response = await gw.post_chat({"model": "up", "messages": HELLO})
    assert response.status == 500  # the upstream's own
    spans = await receiver.wait_for(3)
    (server,) = by_kind(spans, "SERVER")
    assert server.status == "STATUS_CODE_ERROR"
    assert server.attributes["error.type"] == "500"
    assert server.attributes["aichat.error"] == (await response.json())["error"]["code"]
    assert {s.attributes["error.type"] for s in by_kind(spans, "CLIENT")} == {"500"}


async def test_a_messages_tool_call_has_its_finish_reason(
    receiver: Receiver, gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    openai_upstream[0].tool_calls = True
    claude = anthropic.AsyncAnthropic(base_url=gw.url, api_key=API_KEY, max_retries=0)
    async with claude.messages.stream(
        model="up",
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
    ) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    spans = await receiver.wait_for(2)
    (server,), (attempt,) = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    assert server.name == "POST /v1/messages"
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert attempt.attributes["gen_ai.request.max_tokens"] == 100


async def test_a_messages_request_to_an_anthropic_route_is_an_anthropic_chat(
    receiver: Receiver, native_gw: Gateway, natives: Natives
) -> None:
    natives.claude.tool = True
    claude = anthropic.AsyncAnthropic(base_url=native_gw.url, api_key=API_KEY, max_retries=0)
    async with claude.messages.stream(
        model="claude",
        max_tokens=100,
        stop_sequences=["END"],
        extra_body={
            "temperature": 0.2,
            "output_config": {
                "format": {"type": "json_schema", "schema": {"type": "object"}},
                "effort": "max",
            },
        },
        system="Be terse.",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        extra_headers={"traceparent": TRACEPARENT},
    ) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    spans = await receiver.wait_for(2)
    # No contents unless an operator asks: neither the prompt's nor the answer's.
    said = json.dumps([span.attributes for span in spans])
    assert not any(words in said for words in ("Be terse", "Paris", "Hello from Claude"))
    (server,), (attempt,) = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    assert (server.name, server.trace_id) == ("POST /v1/messages", CLIENT_TRACE)
    assert server.attributes["aichat.route"] == "claude"
    assert server.attributes["aichat.upstream"] == "claude (anthropic)"
    # The answer's price, as the access line's cost_usd: uncached, cache read, cache write, output.
    dollars = (3 * 3 + 255 * 0.3 + 10 * 3.75 + 9 * 15) / 1e6
    assert server.attributes["aichat.cost.usd"] == pytest.approx(dollars)
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.request.max_tokens": 100,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.stop_sequences": ["END"],
        "gen_ai.request.reasoning.level": "max",
        "gen_ai.output.type": "json",
        "gen_ai.request.stream": True,
        "gen_ai.response.model": "claude-sonnet-4-5",
        "gen_ai.response.id": "msg_01fake",
        "gen_ai.response.finish_reasons": ["tool_use"],  # in Anthropic's own words
        # Every input token, cached or not, then the cached ones apart (as the meter counts).
        "gen_ai.usage.input_tokens": 3 + 10 + 255,
        "gen_ai.usage.cache_read.input_tokens": 255,
        "gen_ai.usage.cache_write.input_tokens": 10,  # the conventions' name now
        "gen_ai.usage.cache_creation.input_tokens": 10,  # the name it replaced
        "gen_ai.usage.output_tokens": 9,
        "gen_ai.usage.reasoning.output_tokens": None,  # inside output_tokens, not counted apart
        "server.port": port_of(natives.claude_url),
        "aichat.upstream.api": "messages",
    }
    assert {name: attempt.attributes.get(name) for name in expected} == expected
    assert attempt.attributes["gen_ai.response.time_to_first_chunk"] > 0
    sent = natives.claude.headers[-1]["traceparent"]
    assert sent.split("-")[1:3] == [CLIENT_TRACE, attempt.span_id]


async def test_a_responses_request_to_a_responses_route_is_an_openai_chat(
    receiver: Receiver, native_gw: Gateway, natives: Natives
) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{native_gw.url}/v1", api_key=API_KEY, max_retries=0
    ) as client:
        answer = await client.responses.create(
            model="codex",
            input="Weather?",
            max_output_tokens=300,
            top_p=0.9,
            text={"format": {"type": "json_object"}},
            reasoning={"effort": "high"},
        )
    assert answer.output_text == "Hello from Responses"
    spans = await receiver.wait_for(2)
    (server,), (attempt,) = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    assert server.name == "POST /v1/responses"
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-5-codex",
        "gen_ai.request.max_tokens": 300,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.output.type": "json",
        "gen_ai.request.reasoning.level": "high",
        "gen_ai.request.stream": None,
        "gen_ai.response.model": "gpt-5-codex",
        "gen_ai.response.id": "resp_fake01",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 256,
        "gen_ai.usage.cache_read.input_tokens": 255,
        "gen_ai.usage.cache_write.input_tokens": None,
        "gen_ai.usage.output_tokens": 12,
        "gen_ai.usage.reasoning.output_tokens": 4,  # part of the 12
        "aichat.upstream.api": "responses",
        "aichat.route": "codex",
    }
    assert {name: attempt.attributes.get(name) for name in expected} == expected
    assert "gen_ai.response.time_to_first_chunk" not in attempt.attributes  # not a stream


async def test_an_error_event_mid_stream_fails_the_attempt_and_the_request(
    receiver: Receiver, native_gw: Gateway, natives: Natives
) -> None:
    natives.claude.error_event_after = 4  # after message_start, ping, a block start, a delta
    claude = anthropic.AsyncAnthropic(base_url=native_gw.url, api_key=API_KEY, max_retries=0)
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        async with claude.messages.stream(
            model="claude", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            await stream.get_final_message()
    spans = await receiver.wait_for(2)
    (server,), (attempt,) = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    assert attempt.status == server.status == "STATUS_CODE_ERROR"
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["error"]
    assert server.attributes["error.type"] == attempt.attributes["error.type"]
    assert server.attributes["http.response.status_code"] == 200  # the stream had started


async def test_message_contents_are_recorded_only_when_asked(
    receiver: Receiver, gateway_with: GatewayWith
) -> None:
    gateway = await gateway_with(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
    async with gateway.sdk() as client:
        stream = await client.chat.completions.create(
            model="up",
            messages=[{"role": "system", "content": "Be brief."}, *HELLO],  # type: ignore[list-item]
            stream=True,
        )
        async for _ in stream:
            pass
    (attempt,) = by_kind(await receiver.wait_for(2), "CLIENT")
    # A system message of the conversation stays in it.
    assert "gen_ai.system_instructions" not in attempt.attributes
    assert json.loads(attempt.attributes["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Say hello"}]},
    ]
    assert json.loads(attempt.attributes["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Hi from upstream"}],
            "finish_reason": "stop",
        }
    ]


async def test_contents_of_a_native_answer_are_read_from_its_events(
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    make_gateway: GatewayFactory,
    natives: Natives,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    natives.claude.tool = True
    gateway = await make_gateway(routes=native_routes(natives))
    claude = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=API_KEY, max_retries=0)
    async with claude.messages.stream(
        model="claude",
        max_tokens=100,
        system="Be terse.",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
    ) as stream:
        await stream.get_final_message()
    (attempt,) = by_kind(await receiver.wait_for(2), "CLIENT")
    # Messages takes its system prompt apart from the conversation: so does the span.
    assert json.loads(attempt.attributes["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "Be terse."}
    ]
    assert json.loads(attempt.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
    ]
    (output,) = json.loads(attempt.attributes["gen_ai.output.messages"])
    assert output["finish_reason"] == "tool_use"
    assert output["parts"] == [
        {"type": "text", "content": "Hello from Claude"},
        {
            "type": "tool_call",
            "id": "toolu_01",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
    ]


EXPORT_FAILED = 'aichat_trace_spans_dropped_total{reason="export_failed"}'
QUEUE_FULL = 'aichat_trace_spans_dropped_total{reason="queue_full"}'
EXPORTED = "aichat_trace_spans_exported_total"


async def trace_counts(gateway: Gateway, name: str, count: int) -> dict[str, float]:
    """The gateway's ``aichat_trace_spans_*`` series, once ``name`` has reached ``count``
    (or after 10 s)."""
    counts: dict[str, float] = {}
    for _ in range(100):
        body = await (await gateway.http.get(f"{gateway.url}/metrics")).text()
        counts = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in body.splitlines()
            if line.startswith("aichat_trace_spans")
        }
        if counts.get(name, 0) >= count:
            break
        await asyncio.sleep(0.1)
    return counts


async def test_a_receiver_that_is_down_changes_nothing_for_clients_and_is_counted(
    monkeypatch: pytest.MonkeyPatch, make_gateway: GatewayFactory
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # discard: refused
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    gateway = await make_gateway(routes=(ModelConfig(name="echo", provider="mock", text="Hi"),))
    async with gateway.sdk() as client:
        for _ in range(3):
            answer = await client.chat.completions.create(model="echo", messages=HELLO)  # type: ignore[arg-type]
            assert answer.choices[0].message.content == "Hi"
    counts = await trace_counts(gateway, EXPORT_FAILED, 6)
    assert counts[EXPORT_FAILED] == 6
    assert counts[EXPORTED] == 0


async def test_a_slow_receiver_fills_the_bounded_queue_and_what_finds_it_full_is_counted(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, make_gateway: GatewayFactory
) -> None:
    # A queue of two spans, sent as soon as two wait (never on the timer), and a receiver
    # slow enough to hold the export thread for the whole test, yet within its timeout.
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "2")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "60")
    gateway = await make_gateway(routes=(ModelConfig(name="echo", provider="mock", text="Hi"),))
    receiver.answering.clear()
    try:
        async with gateway.sdk() as client:
            for request in range(5):
                answer = await client.chat.completions.create(model="echo", messages=HELLO)  # type: ignore[arg-type]
                assert answer.choices[0].message.content == "Hi"
                if request == 0:  # its two spans are being sent: the thread waits on the receiver
                    async with asyncio.timeout(10):
                        await receiver.held.wait()
        # Every request was answered while the receiver had yet to answer its first export.
        assert (receiver.waiting, receiver.spans) == (1, [])
        # Of the next four requests' eight spans, two found room in the queue.
        assert (await trace_counts(gateway, QUEUE_FULL, 6))[QUEUE_FULL] == 6
    finally:
        receiver.answering.set()
    assert len(await receiver.wait_for(4)) == 4
    counts = await trace_counts(gateway, EXPORTED, 4)
    assert (counts[EXPORTED], counts[QUEUE_FULL], counts[EXPORT_FAILED]) == (4, 6, 0)


def test_tracing_off_imports_nothing_of_opentelemetry() -> None:
    program = (
        "import sys\n"
        "from aichat.app import create_app\n"
        "from aichat.core.config import Settings\n"
        "app = create_app(Settings(api_keys=('sk-x-0123456789abcdef',)))\n"
        "print(len(app.middlewares), [m for m in sys.modules if m.startswith('opentelemetry')])\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    off = run(sys.executable, "-c", program, env=env)
    on = run(
        sys.executable,
        "-c",
        program,
        env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
    )
    assert off.stdout.split() == ["5", "[]"], off.stderr
    assert on.stdout.split()[0] == "6" and "'opentelemetry.sdk.trace'" in on.stdout, on.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_TRACES_EXPORTER", "zipkin")],
)
def test_what_aichat_cannot_export_is_refused_at_start(name: str, value: str) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", name: value}
    with pytest.raises(StartupError, match=name):
        configured_tracing(environ)
    assert configured_tracing({**environ, "OTEL_SDK_DISABLED": "true"}) is None


def test_the_traces_own_protocol_wins_over_the_one_for_every_signal() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",  # metrics and logs, elsewhere
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    assert tracing_wanted(environ)
    with pytest.raises(StartupError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc"):
        tracing_wanted({**environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})
