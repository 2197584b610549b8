"""Traces in a real receiver: Arize Phoenix, reading the gateway's OTLP/HTTP export.

A streamed chat, a Messages request with a tool call (to a native Anthropic upstream, with
cached tokens), a retried request and a failed one
each arrive as a server span under the client's own trace, with a span per upstream attempt
under it, which Phoenix reads as LLM spans from their GenAI attributes. A Phoenix that stops
answering changes nothing for clients.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest

from aichat.core.config import ModelConfig, PriceConfig
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.fakes import FakeOpenAI
from tests.tracing.conftest import QUICK_EXPORT, Natives
from tests.tracing.phoenix_process import Phoenix

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
async def gw(
    phoenix: Phoenix,
    monkeypatch: pytest.MonkeyPatch,
    make_gateway: GatewayFactory,
    openai_upstream: tuple[FakeOpenAI, str],
    natives: Natives,
) -> Gateway:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", phoenix.url)
    for name, value in QUICK_EXPORT.items():
        monkeypatch.setenv(name, value)
    url = openai_upstream[1]
    routes = (
        ModelConfig(name="up", provider="openai", base_url=url, upstream_model="gpt-up"),
        ModelConfig(
            name="claude",
            provider="anthropic",
            base_url=natives.claude_url,
            upstream_model="claude-sonnet-4-5",
            price=PriceConfig(input=Decimal(3), output=Decimal(15)),
        ),
    )
    return await make_gateway(routes=routes, retries=1, retry_backoff=0)


class ClientTrace:
    """A trace a client starts: its ``traceparent``, and what Phoenix stored of it."""

    def __init__(self) -> None:
        self.trace_id = f"{random.getrandbits(128):032x}"
        self.span_id = f"{random.getrandbits(64):016x}"
        self.headers = {"traceparent": f"00-{self.trace_id}-{self.span_id}-01"}

    async def spans(self, phoenix: Phoenix, count: int) -> tuple[dict[str, Any], list[dict]]:
        """The server span and the attempt spans (in order), once ``count`` have arrived."""
        spans = await asyncio.to_thread(phoenix.spans, self.trace_id, count)
        assert len(spans) == count, spans
        (server,) = [span for span in spans if span["parent_id"] == self.span_id]
        attempts = [span for span in spans if span is not server]
        assert all(span["parent_id"] == server["context"]["span_id"] for span in attempts)
        assert {span["context"]["trace_id"] for span in spans} == {self.trace_id}
        return server, sorted(attempts, key=lambda span: span["attributes"]["aichat.attempt"])


async def test_a_streamed_chat_arrives_under_the_clients_trace(
    phoenix: Phoenix, gw: Gateway
) -> None:
    trace = ClientTrace()
    async with gw.sdk() as client:
        stream = await client.chat.completions.create(
            model="up",
            messages=HELLO,  # type: ignore[arg-type]
            stream=True,
            max_tokens=64,
            temperature=0.2,
            extra_headers=trace.headers,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hi from upstream"
    server, (attempt,) = await trace.spans(phoenix, 2)
    assert server["name"] == "POST /v1/chat/completions"
    assert server["attributes"]["aichat.key.name"] == "key-1"
    assert server["attributes"]["aichat.route"] == "up"
    assert server["attributes"]["aichat.time_to_first_token"] > 0
    assert server["attributes"]["http.response.status_code"] == 200
    assert attempt["name"] == "chat gpt-up"
    assert attempt["span_kind"] == "LLM"  # Phoenix understood the GenAI conventions
    attributes = attempt["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"] == "gpt-up"
    assert attributes["gen_ai.request.max_tokens"] == 64
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gen_ai.usage.input_tokens"] == 7
    assert attributes["gen_ai.usage.output_tokens"] == 3
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert attributes["server.address"] == "127.0.0.1"
    assert API_KEY not in str(server) + str(attempt)


async def test_a_messages_tool_call_arrives_with_its_finish_reason(
    phoenix: Phoenix, gw: Gateway, natives: Natives
) -> None:
    natives.claude.tool = True
    trace = ClientTrace()
    claude = anthropic.AsyncAnthropic(
        base_url=gw.url, api_key=API_KEY, max_retries=0, default_headers=trace.headers
    )
    message = await claude.messages.create(
        model="claude",
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
    )
    assert message.stop_reason == "tool_use"
    server, (attempt,) = await trace.spans(phoenix, 2)
    assert server["name"] == "POST /v1/messages"
    # Priced: cache reads and writes at the input price (their default), then the output.
    assert server["attributes"]["aichat.cost.usd"] == pytest.approx((268 * 3 + 9 * 15) / 1e6)
    assert attempt["span_kind"] == "LLM"
    attributes = attempt["attributes"]
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.response.finish_reasons"] == ["tool_use"]
    assert attributes["gen_ai.request.max_tokens"] == 100
    assert attributes["gen_ai.usage.input_tokens"] == 3 + 10 + 255
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 255
    assert attributes["gen_ai.usage.cache_write.input_tokens"] == 10
    # Phoenix read the counts: its own token counts (OpenInference's) come from them.
    assert attributes["llm.token_count.prompt"] == 3 + 10 + 255
    assert attributes["llm.token_count.prompt_details.cache_read"] == 255
    assert attributes["llm.token_count.prompt_details.cache_write"] == 10


async def test_a_retried_request_arrives_as_two_attempts(
    phoenix: Phoenix, gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    openai_upstream[0].status, openai_upstream[0].fail_times = 500, 1
    trace = ClientTrace()
    async with gw.sdk() as client:
        answer = await client.chat.completions.create(
            model="up",
            messages=HELLO,  # type: ignore[arg-type]
            extra_headers=trace.headers,
        )
    assert answer.choices[0].message.content == "Hi from upstream"
    server, (failed, answered) = await trace.spans(phoenix, 3)
    assert failed["status_code"] == "ERROR"
    assert failed["attributes"]["error.type"] == "500"
    assert answered["status_code"] != "ERROR"
    assert answered["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    assert server["status_code"] != "ERROR"
    assert server["attributes"]["aichat.attempts"] == 2


async def test_a_failed_request_arrives_as_errors(
    phoenix: Phoenix, gw: Gateway, openai_upstream: tuple[FakeOpenAI, str]
) -> None:
    openai_upstream[0].status = 503
    trace = ClientTrace()
    response = await gw.http.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "up", "messages": HELLO},
        headers={"Authorization": f"Bearer {API_KEY}", **trace.headers},
    )
    assert response.status == 503
    server, attempts = await trace.spans(phoenix, 3)
    assert server["status_code"] == "ERROR"
    assert server["attributes"]["error.type"] == "503"
    assert [a["attributes"]["error.type"] for a in attempts] == ["503", "503"]
    assert all(a["attributes"]["gen_ai.response.finish_reasons"] == ["error"] for a in attempts)


async def test_a_stopped_phoenix_changes_nothing_for_clients(phoenix: Phoenix, gw: Gateway) -> None:
    async with gw.sdk() as client:
        with phoenix.paused():
            loop = asyncio.get_running_loop()
            started = loop.time()
            for _ in range(5):
                answer = await client.chat.completions.create(model="up", messages=HELLO)  # type: ignore[arg-type]
                assert answer.choices[0].message.content == "Hi from upstream"
            # Well within the exporter's timeout (OTEL_EXPORTER_OTLP_TIMEOUT, 2 s): no request
            # waited for the receiver.
            assert loop.time() - started < 2
            dropped = 0.0
            for _ in range(100):
                await asyncio.sleep(0.1)
                dropped = await _dropped(gw)
                if dropped:
                    break
            assert dropped > 0
        # Phoenix answers again: new spans reach it.
        trace = ClientTrace()
        await client.chat.completions.create(
            model="up",
            messages=HELLO,  # type: ignore[arg-type]
            extra_headers=trace.headers,
        )
    await trace.spans(phoenix, 2)


async def _dropped(gateway: Gateway) -> float:
    body = await (await gateway.http.get(f"{gateway.url}/metrics")).text()
    prefix = 'aichat_trace_spans_dropped_total{reason="export_failed"} '
    return sum(float(line[len(prefix) :]) for line in body.splitlines() if line.startswith(prefix))


def test_phoenix_listens_on_loopback_only(phoenix: Phoenix) -> None:
    port = int(phoenix.url.rsplit(":", 1)[1])
    listening = _listening_addresses({port, phoenix.grpc_port})
    assert set(listening) == {port, phoenix.grpc_port}, listening
    assert all(address in _LOOPBACK for addresses in listening.values() for address in addresses)


# 127.0.0.1, ::ffff:127.0.0.1 and ::1 as /proc/net/tcp{,6} write them.
_LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _listening_addresses(ports: set[int]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) in ports:  # 0A: LISTEN
                found.setdefault(int(port, 16), set()).add(address)
    return found
