"""Hand-written hostile requests against a running gateway, sent as raw bytes.

Each gets its documented status with an OpenAI-shaped error (or, when the bytes are not
even HTTP, aiohttp's own 400 and a closed connection), the gateway's own code logs no
error, and the gateway goes on serving afterwards.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aichat.core.config import ModelConfig
from aichat.operations.lifecycle import LIFECYCLE
from aichat.operations.logs import TextFormatter
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.fakes import json_events, sse_events
from tests.fuzz.wire import exchange, http_request, openai_error, parse_answer, port_of

AUTH = (b"Authorization", f"Bearer {API_KEY}".encode())
JSON = (b"Content-Type", b"application/json")
HELLO = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
MIB = 1024 * 1024
# ``gpt-4o`` echoes the last user message; ``relay`` goes to an aichats upstream.
ROUTES = (
    ModelConfig(name="gpt-4o", provider="mock"),
    ModelConfig(name="relay", provider="aichats"),
)
# The gateway's own code logs no error for any of these requests.
pytestmark = pytest.mark.usefixtures("no_aichat_errors")


def chat(body: bytes, *headers: tuple[bytes, bytes], length: bool = True) -> bytes:
    """A chat-completions request with the test key."""
    return http_request("POST", "/v1/chat/completions", body, [AUTH, *headers], length=length)


def chat_json(**fields: object) -> bytes:
    """A chat body: one user message ``hi`` to ``gpt-4o``, with ``fields`` set or replaced."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **fields}
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    """A gateway with a mock model and an aichats model."""
    return await make_gateway(routes=ROUTES)


async def still_serving(gateway: Gateway) -> None:
    """A plain request still gets its answer."""
    answer = await exchange(gateway.url, chat(HELLO, JSON))
    assert answer.status == 200, answer.head
    assert answer.json()["choices"][0]["message"]["content"] == "hi"


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"", b"application/json", "invalid_json"),
        (b'{"model": "gpt-4o", "messages": [', b"application/json", "invalid_json"),
        (b"{'model': 'gpt-4o'}", b"application/json", "invalid_json"),
        (
            b'{"model":"gpt-4o","messages":[{"role":"user","content":"\xff\xfe"}]}',
            b"application/json",
            "invalid_json",
        ),
        (b"[" * 100_000 + b"]" * 100_000, b"application/json", "invalid_json"),
        (
            b'{"model":"gpt-4o","temperature":NaN,"messages":[]}',
            b"application/json",
            "invalid_json",
        ),
        (
            b'{"model":"gpt-4o","max_tokens":Infinity,"messages":[]}',
            b"application/json",
            "invalid_json",
        ),
        (HELLO[:-1] + b',"x":-Infinity}', b"application/json", "invalid_json"),  # passed through
        (HELLO[:-1] + b',"temperature":1e400}', b"application/json", "invalid_json"),
        (HELLO[:-1] + b',"x":[-1E+400]}', b"application/json", "invalid_json"),  # passed through
        (b"model=gpt-4o&messages=hi", b"application/x-www-form-urlencoded", "invalid_json"),
        (
            b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-4o\r\n--b--\r\n',
            b"multipart/form-data; boundary=b",
            "invalid_json",
        ),
        (b"[]", b"application/json", "invalid_body"),
        (b"null", b"application/json", "invalid_body"),
        (b'"gpt-4o"', b"application/json", "invalid_body"),
    ],
    ids=[
        "empty",
        "truncated",
        "single-quotes",
        "invalid-utf8",
        "nested-100k",
        "nan",
        "infinity",
        "infinity-unknown-field",
        "1e400",
        "minus-1e400-unknown-field",
        "form",
        "multipart",
        "array",
        "null",
        "string",
    ],
)
async def test_bodies_that_are_not_a_json_object_get_400(
    gateway: Gateway, body: bytes, content_type: bytes, code: str
) -> None:
    answer = await exchange(gateway.url, chat(body, (b"Content-Type", content_type)))
    assert openai_error(answer, 400)["code"] == code
    await still_serving(gateway)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream": "yes"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"temperature": "0"}, "temperature"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"n": 1.5}, "n"),
        ({"stream_options": {"include_usage": "on"}}, "stream_options.include_usage"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ],
)
async def test_values_of_the_wrong_json_type_are_refused_not_coerced(
    gateway: Gateway, fields: dict[str, object], param: str
) -> None:
    error = openai_error(await exchange(gateway.url, chat(chat_json(**fields), JSON)), 400)
    assert (error["code"], error["param"]) == ("invalid_value", param)


async def test_a_whole_number_written_with_a_fraction_is_an_integer(gateway: Gateway) -> None:
    answer = await exchange(gateway.url, chat(chat_json(max_tokens=16.0, n=1.0), JSON))
    assert answer.status == 200, answer.body


@pytest.mark.parametrize(
    "content_type", [None, b"text/plain", b"application/x-www-form-urlencoded"]
)
async def test_a_json_body_is_read_as_json_whatever_its_content_type(
    gateway: Gateway, content_type: bytes | None
) -> None:
    # `curl -d '{...}'` labels its body as a form: the body, not the label, decides.
    headers = [] if content_type is None else [(b"Content-Type", content_type)]
    answer = await exchange(gateway.url, chat(HELLO, *headers))
    assert answer.status == 200, answer.head


async def test_oversized_bodies_get_413_however_they_are_sent(gateway: Gateway) -> None:
    big = chat_json(padding="x" * MIB)
    answer = await exchange(gateway.url, chat(big, JSON))
    assert openai_error(answer, 413)["code"] == "request_too_large"
    # Chunked, with no length announced: counted as it arrives.
    chunked = b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n"
    answer = await exchange(
        gateway.url, chat(chunked, JSON, (b"Transfer-Encoding", b"chunked"), length=False)
    )
    assert openai_error(answer, 413)["code"] == "request_too_large"
    await still_serving(gateway)


async def test_a_body_announced_larger_than_the_limit_gets_413_before_it_is_sent(
    gateway: Gateway,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway.url))
    writer.write(
        chat(HELLO, JSON, (b"Content-Length", b"10485760"), length=False)
    )  # a start, and then nothing: no body timeout to wait for
    await writer.drain()
    async with asyncio.timeout(5):  # AICHAT_BODY_TIMEOUT is 30 s
        answer = parse_answer(await reader.readuntil(b"}}"))
    writer.close()
    assert openai_error(answer, 413)["code"] == "request_too_large"


@pytest.mark.parametrize("encoding", [b"gzip", b"deflate", b"br", b"x-unknown", b"GZIP"])
async def test_compressed_bodies_are_refused_in_each_apis_shape(
    gateway: Gateway, encoding: bytes
) -> None:
    # 48 KiB of gzip that would inflate to 50 MB: refused, never inflated.
    bomb = gzip.compress(chat_json(padding="a" * 50_000_000))
    assert len(bomb) < 100_000
    answer = await exchange(gateway.url, chat(bomb, JSON, (b"Content-Encoding", encoding)))
    error = openai_error(answer, 415)
    assert error["code"] == "unsupported_content_encoding"
    assert answer.headers["accept-encoding"] == "identity"
    anthropic = http_request(
        "POST",
        "/v1/messages",
        bomb,
        [(b"x-api-key", API_KEY.encode()), JSON, (b"Content-Encoding", encoding)],
    )
    answer = await exchange(gateway.url, anthropic)
    assert answer.status == 415
    assert answer.json()["type"] == "error"
    assert answer.json()["error"]["type"] == "invalid_request_error"
    identity = await exchange(gateway.url, chat(HELLO, JSON, (b"Content-Encoding", b"identity")))
    assert identity.status == 200, identity.body
    await still_serving(gateway)


@pytest.mark.slow
async def test_gzip_bombs_cost_the_event_loop_nothing_with_or_without_a_key(
    gateway: Gateway,
) -> None:
    # 1 MB of gzip inflating to 1 GiB: inflating one took ~0.7 s of the loop's time, and
    # even a 401 drained (inflated) the body afterwards.
    bomb = gzip.compress(bytes(1024 * MIB), compresslevel=1)
    assert len(bomb) < 8 * MIB
    loop = asyncio.get_running_loop()
    cpu = time.process_time()
    for key in (True, False):
        headers = [JSON, (b"Content-Encoding", b"gzip")]
        request = http_request(
            "POST", "/v1/chat/completions", bomb, [AUTH, *headers] if key else headers
        )
        started = loop.time()
        answer = await exchange(gateway.url, request)  # until the gateway closes
        assert answer.status == (415 if key else 401), answer.head
        assert loop.time() - started < 5
    assert time.process_time() - cpu < 1.5, "the gateway spent CPU time on compressed bodies"
    await still_serving(gateway)


async def test_no_library_versions_in_the_server_header(gateway: Gateway) -> None:
    answers = [
        await exchange(gateway.url, chat(HELLO, JSON)),
        await exchange(gateway.url, http_request("GET", "/health")),
        await exchange(gateway.url, http_request("GET", "/nowhere")),
        await exchange(gateway.url, b"POST /v1/chat/completions HTTP/9.9\r\nHost: x\r\n\r\n"),
    ]
    assert [answer.headers.get("server") for answer in answers] == ["aichat"] * 4


async def test_deep_nesting_the_json_parser_accepts_is_served(gateway: Gateway) -> None:
    nested: object = 1
    for _ in range(200):  # 400 levels: deep, yet within what Python's JSON parser reads
        nested = {"a": [nested]}
    for body in (chat_json(tool_choice=nested), chat_json(metadata=nested)):
        answer = await exchange(gateway.url, chat(body, JSON))
        assert answer.status == 200, answer.body[:300]


async def test_unpaired_surrogates_are_refused_and_pairs_are_kept(gateway: Gateway) -> None:
    for body in (
        b'{"model":"gpt-4o","messages":[{"role":"user","content":"a\\ud800b"}]}',
        b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"\\uDFFF"}]}',
        b'{"model":"gpt-4o\\udc00","messages":[{"role":"user","content":"hi"}]}',
        b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"user":"\\ude00\\ud83d"}',
    ):
        answer = await exchange(gateway.url, chat(body, JSON))
        assert openai_error(answer, 400)["code"] == "invalid_json"
    pair = b'{"model":"gpt-4o","messages":[{"role":"user","content":"\\ud83d\\ude00 ok"}]}'
    answer = await exchange(gateway.url, chat(pair, JSON))
    assert answer.status == 200, answer.body
    assert answer.json()["choices"][0]["message"]["content"] == "\U0001f600 ok"


async def test_null_bytes_and_control_characters_pass_through_intact(gateway: Gateway) -> None:
    text = "a\x00b\x1b[31m\u2028c\r\n"
    for stream in (False, True):
        body = chat_json(stream=stream, messages=[{"role": "user", "content": text}])
        answer = await exchange(gateway.url, chat(body, JSON))
        assert answer.status == 200, answer.head
        if stream:
            assert sse_events(answer.body)[-1] == "[DONE]"
            deltas = [chunk["choices"][0]["delta"] for chunk in json_events(answer.body)]
            assert "".join(delta.get("content") or "" for delta in deltas) == text
        else:
            assert answer.json()["choices"][0]["message"]["content"] == text
    answer = await exchange(gateway.url, chat(chat_json(model="gpt-4o\x00"), JSON))
    assert openai_error(answer, 404)["code"] == "model_not_found"


@pytest.mark.parametrize(
    "model",
    ["gpt-4o\r\nX-Evil: 1", "gpt-4o\nX-Evil: 1", "gpt-4o\rX-Evil: 1", "\u0130\u212a\r\nX-Evil: 1"],
)
async def test_model_names_never_become_headers(gateway: Gateway, model: str) -> None:
    for stream in (False, True):
        answer = await exchange(gateway.url, chat(chat_json(model=model, stream=stream), JSON))
        error = openai_error(answer, 404)
        assert error["code"] == "model_not_found"
        assert model in error["message"]  # echoed inside JSON, where it is only text
        assert b"x-evil" not in answer.head.lower()
    path = "/v1/models/gpt-4o%0D%0AX-Evil:%201"
    answer = await exchange(gateway.url, http_request("GET", path, headers=[AUTH]))
    openai_error(answer, 404)
    assert b"x-evil" not in answer.head.lower()


async def test_unsafe_request_ids_are_replaced_not_echoed(gateway: Gateway) -> None:
    for request_id in (b"a b", b"x" * 200, b"\xc3\xa9t\xc3\xa9", b"id;X-Evil=1"):
        answer = await exchange(gateway.url, chat(HELLO, JSON, (b"X-Request-ID", request_id)))
        assert answer.status == 200
        assert answer.headers["x-request-id"] != request_id.decode("latin-1")
        assert answer.headers["x-request-id"].isalnum()


@pytest.mark.parametrize(
    "header",
    [
        (b"Authorization", b"Bearer cl\xc3\xa9"),  # UTF-8
        (b"Authorization", b"Bearer \xff\xfe\xfd"),  # not UTF-8 at all
        (b"Authorization", b"Bearer " + API_KEY.encode() + b"x"),  # the key, then more
        (b"Authorization", b"Bearer " + b"k" * 6000),
        (b"Authorization", b"Bearer\t" + API_KEY.encode()[:-1]),
        (b"x-api-key", b"\xe2\x80\xae" + API_KEY.encode()),  # right-to-left override
        (b"Authorization", b"Bearer a\r\nX-Evil: 1"),  # CRLF ends the header: a wrong key
    ],
    ids=["utf8", "latin1", "longer", "6k", "tab-short", "rtl", "crlf"],
)
async def test_hostile_keys_get_401(gateway: Gateway, header: tuple[bytes, bytes]) -> None:
    request = http_request("POST", "/v1/chat/completions", HELLO, [JSON, header])
    error = openai_error(await exchange(gateway.url, request), 401)
    assert error["code"] == "invalid_api_key"
    await still_serving(gateway)


@pytest.mark.parametrize(
    "request_bytes",
    [
        chat(HELLO, JSON, (b"X-Evil", b"a\rb")),  # bare CR inside a header value
        chat(HELLO, JSON, (b"Authorization", b"Bearer a\x00b")),  # NUL in a header
        chat(HELLO, JSON, (b"X-Long", b"a" * 20_000)),  # longer than any header may be
        chat(b"0\r\n\r\n", (b"Transfer-Encoding", b"chunked")),  # both lengths: smuggling
        chat(HELLO, (b"Content-Length", b"-1"), length=False),
        b"POST /v1/chat/completions HTTP/9.9\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n",  # TLS hello
    ],
    ids=["bare-cr", "nul", "long-header", "cl-and-te", "negative-length", "http-9", "tls"],
)
async def test_bytes_that_are_not_http_get_400_and_a_closed_connection(
    gateway: Gateway, request_bytes: bytes
) -> None:
    # aiohttp refuses these before any handler runs, with its own plain-text 400.
    answer = await exchange(gateway.url, request_bytes)
    assert answer.status == 400, answer.head
    await still_serving(gateway)


async def test_tens_of_thousands_of_messages(gateway: Gateway) -> None:
    messages = [{"role": "user" if i % 2 else "assistant", "content": "a"} for i in range(30_001)]
    loop = asyncio.get_running_loop()
    for model in ("gpt-4o", "relay"):
        body = chat_json(model=model, messages=messages)
        assert len(body) < MIB
        started = loop.time()
        answer = await exchange(gateway.url, chat(body, JSON))
        assert answer.status == 200, answer.body[:300]
        assert loop.time() - started < 10


@dataclass
class Firehose:
    """An aichats upstream that streams up to ``limit`` bytes as fast as it may write them."""

    limit: int = 256 * MIB
    written: int = 0
    ended: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.ended = asyncio.Event()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        piece = b"data: " + b"x" * (64 * 1024) + b"\n\n"
        try:
            while self.written < self.limit:
                await response.write(piece)  # waits while the gateway is not reading
                self.written += len(piece)
        finally:
            self.ended.set()
        return response


async def _settled(upstream: Firehose, within: float) -> int:
    """``upstream.written`` once it has not grown for half a second."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last = -1
    while upstream.written != last:
        assert loop.time() < deadline, f"upstream still writing: {upstream.written} bytes"
        last = upstream.written
        await asyncio.sleep(0.5)
    return last


@pytest.fixture
async def firehose() -> AsyncIterator[tuple[Firehose, str]]:
    """A :class:`Firehose` on loopback and its base URL."""
    fake = Firehose()
    app = web.Application()
    app.router.add_post("/chat/send2/", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


async def test_a_reader_that_stops_stops_the_upstream_too(
    make_gateway: GatewayFactory, firehose: tuple[Firehose, str]
) -> None:
    fake, url = firehose
    gateway = await make_gateway(routes=ROUTES, aichats_base_url=url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    port = port_of(gateway.url)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
    writer.write(chat(chat_json(model="relay", stream=True), JSON))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    # The client reads nothing more: the gateway may fill socket buffers, nothing else.
    held = await _settled(fake, within=10)
    assert held < 48 * MIB, f"{held} bytes read ahead for a client that reads nothing"
    # Reading on lets the upstream go on.
    for _ in range(200):
        await reader.read(64 * 1024)
    assert fake.written > held
    writer.close()
    assert fake.ended is not None
    await asyncio.wait_for(fake.ended.wait(), 5)  # the client left: the upstream is cut
    assert fake.written < fake.limit


async def test_a_body_sent_slowly_holds_no_upstream_slot(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(routes=ROUTES, max_concurrent=1, queue_timeout=0.2)
    port = port_of(gateway.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = chat(HELLO, JSON)
    writer.write(request[:-20])
    await writer.drain()
    # While the slow body trickles in, the one slot stays free for others.
    for piece in request[-20:]:
        answer = await exchange(gateway.url, chat(HELLO, JSON))
        assert answer.status == 200, answer.body
        writer.write(bytes([piece]))
        await writer.drain()
        await asyncio.sleep(0.02)
    slow = parse_answer(await asyncio.wait_for(reader.read(), 5))
    writer.close()
    assert slow.status == 200, slow.body
    assert slow.json()["choices"][0]["message"]["content"] == "hi"


async def test_a_client_that_leaves_mid_body_leaves_nothing_behind(gateway: Gateway) -> None:
    port = port_of(gateway.url)
    for cut in (10, len(HELLO) // 2, len(HELLO) - 1):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(chat(HELLO, JSON)[: -len(HELLO) + cut])
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    await still_serving(gateway)
    inflight = gateway.app[LIFECYCLE].inflight
    if inflight:  # the abandoned requests end by themselves
        await asyncio.wait(set(inflight), timeout=2)
    assert not inflight


async def test_a_body_that_never_finishes_gets_408(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(routes=ROUTES, body_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway.url))
    writer.write(chat(HELLO, JSON)[:-5])  # the last bytes never come
    await writer.drain()
    stalled = parse_answer(await asyncio.wait_for(reader.read(64 * 1024), 5))
    writer.close()
    assert stalled.status == 408, stalled.body
    assert stalled.json()["error"]["code"] == "request_timeout"
    await still_serving(gateway)


async def test_a_model_name_cannot_forge_an_access_log_line(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    model = "gpt-4o\r\n2026-01-01 00:00:00,000 INFO aichat.access request key=key-9\x1b[31m"
    caplog.set_level(logging.INFO, logger="aichat.access")
    answer = await exchange(gateway.url, chat(chat_json(model=model), JSON))
    assert openai_error(answer, 404)["code"] == "model_not_found"
    [record] = [r for r in caplog.records if r.name == "aichat.access"]
    line = TextFormatter().format(record)
    assert line.splitlines() == [line]
    assert "\x1b" not in line
    # The forged text stays inside the quoted model value, escaped.
    escaped = "gpt-4o\\r\\n2026-01-01 00:00:00,000 INFO aichat.access request key=key-9\\x1b[31m"
    assert f'model="{escaped}"' in line
    assert " key=key-1 " in line


async def test_failed_keys_are_counted_and_logged_at_a_bounded_rate(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await make_gateway(routes=ROUTES, metrics_key="metrics-key")
    for n in range(50):
        key = (b"Authorization", b"Bearer wrong-%d" % n)
        request = http_request("POST", "/v1/chat/completions", HELLO, [JSON, key])
        assert (await exchange(gateway.url, request)).status == 401
    metrics_request = http_request("GET", "/metrics", headers=[(b"Authorization", b"Bearer no")])
    assert (await exchange(gateway.url, metrics_request)).status == 401
    warnings = [r for r in caplog.records if r.name == "aichat.auth"]
    assert len(warnings) == 1  # one line per 10 s, however many attempts
    assert warnings[0].fields == {"attempts": 1, "from": "127.0.0.1:1"}  # type: ignore[attr-defined]
    scrape = http_request("GET", "/metrics", headers=[(b"Authorization", b"Bearer metrics-key")])
    answer = await exchange(gateway.url, scrape)
    assert answer.status == 200
    assert b"aichat_auth_failures_total 51.0" in answer.body
