"""Client connections are bounded in time: silent or trickling ones are closed, real ones not.

Real sockets on 127.0.0.1, real descriptor counts of this process (the gateway runs in it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from aichat import server
from aichat.core.config import ModelConfig
from aichat.operations import connections
from tests.conftest import API_KEY, Gateway, GatewayFactory
from tests.fakes import sse_events
from tests.fuzz.wire import parse_answer, port_of

ROUTES = (
    ModelConfig(name="gpt-4o", provider="mock"),
    ModelConfig(name="slow", provider="mock", text="a b c d e", tokens_per_second=5),
)
Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
)


def request(model: str = "gpt-4o", stream: bool = False) -> bytes:
    body = b'{"model":"%s","stream":%s,"messages":[{"role":"user","content":"hi"}]}' % (
        model.encode(),
        b"true" if stream else b"false",
    )
    return HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closes the connection within ``within`` seconds (nothing read)."""
    try:
        async with asyncio.timeout(within):
            return await reader.read(1) == b""
    except ConnectionResetError:  # closed with bytes of ours unread: a reset
        return True
    except TimeoutError:
        return False


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One keep-alive answer with a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(parse_answer(head).headers["content-length"])
    return head + await reader.readexactly(length)


async def trickle(writer: asyncio.StreamWriter, data: bytes, gap: float) -> None:
    """Send ``data`` one byte every ``gap`` seconds, until it is sent or the server closes."""
    for byte in data:
        if writer.is_closing():
            return
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(gap)


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    """Header timeout 0.5 s, keep-alive 1.5 s."""
    return await make_gateway(routes=ROUTES, header_timeout=0.5, keepalive_timeout=1.5)


@pytest.fixture
async def connect(gateway: Gateway) -> AsyncIterator[Connect]:
    """Open client connections to the gateway; all closed at the end."""
    writers: list[asyncio.StreamWriter] = []

    async def open_one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway.url))
        writers.append(writer)
        return reader, writer

    yield open_one
    for writer in writers:
        writer.close()


async def test_silent_and_trickling_connections_are_closed_and_free_their_descriptors(
    connect: Connect,
) -> None:
    before = open_descriptors()
    silent = [await connect() for _ in range(100)]
    trickling = [await connect() for _ in range(20)]
    tasks = [asyncio.create_task(trickle(w, HEAD * 10, 0.05)) for _, w in trickling]
    await asyncio.sleep(0.1)
    assert open_descriptors() >= before + 240  # both ends of every connection, here
    closed = await asyncio.gather(*(closed_by_server(r, 3) for r, _ in silent + trickling))
    assert all(closed), f"{closed.count(False)} of {len(closed)} connections still open"
    await asyncio.gather(*tasks)
    # The gateway's ends are gone; only the client ends, still open here, remain.
    assert open_descriptors() <= before + 120


async def test_an_idle_keep_alive_connection_lasts_until_the_keepalive_timeout(
    connect: Connect,
) -> None:
    reader, writer = await connect()
    writer.write(request())
    assert parse_answer(await read_answer(reader)).status == 200
    # Silent past the header timeout: idle keep-alive, not a late head.
    assert not await closed_by_server(reader, 0.9)
    writer.write(request())  # still usable
    assert parse_answer(await read_answer(reader)).status == 200
    assert await closed_by_server(reader, 2.5)


async def test_a_head_trickled_on_a_kept_alive_connection_is_cut_at_the_header_timeout(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(routes=ROUTES, header_timeout=0.5, keepalive_timeout=30)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway.url))
    writer.write(request())
    assert parse_answer(await read_answer(reader)).status == 200
    await asyncio.sleep(0.8)  # idle: fine
    sending = asyncio.create_task(trickle(writer, request(), 0.1))
    assert await closed_by_server(reader, 2)
    await sending
    writer.close()


async def test_answers_and_bodies_slower_than_the_header_timeout_are_not_cut(
    gateway: Gateway, connect: Connect
) -> None:
    reader, writer = await connect()
    writer.write(request("slow", stream=True).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    raw = await asyncio.wait_for(reader.read(), 5)  # about a second of answer
    assert sse_events(parse_answer(raw).body)[-1] == "[DONE]"
    reader, writer = await connect()
    whole = request()
    cut = whole.index(b"\r\n\r\n") + 4
    writer.write(whole[:cut])  # the head, at once
    await trickle(writer, whole[cut:], 1.0 / len(whole[cut:]))  # the body, over a second
    assert parse_answer(await read_answer(reader)).status == 200


async def test_a_flood_of_refused_newcomers_costs_no_look_at_every_connection_each(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, connect: Connect
) -> None:
    # Each newcomer past the limit looked at every open connection for an idle one: under a
    # limit of tens of thousands, a flood of connections to refuse cost milliseconds each.
    monkeypatch.setattr(server, "client_connection_limits", lambda reserved: (4, 8))
    gateway = await make_gateway(routes=ROUTES)
    port = port_of(gateway.url)
    looks = 0
    idle = connections._Connection.idle

    def counted(self: connections._Connection, now: float) -> bool:
        nonlocal looks
        looks += 1
        return idle(self, now)

    monkeypatch.setattr(connections._Connection, "idle", counted)
    uploads = []
    for _ in range(8):  # the most let in: requests whose bodies are on their way
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEAD + b"Content-Length: 1000\r\n\r\n{")
        await writer.drain()
        uploads.append(writer)
    await asyncio.sleep(0.1)  # their heads are read
    started = asyncio.get_running_loop().time()
    for _ in range(100):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await reader.read()
        writer.close()
        assert parse_answer(refused).status == 503
    elapsed = asyncio.get_running_loop().time() - started
    for writer in uploads:
        writer.close()
    # 9 connections a look: one look a RESCAN, not one a newcomer (900 looks).
    assert looks <= 9 * (4 + elapsed / connections.RESCAN + 1), (looks, elapsed)


async def test_past_the_limit_the_longest_idle_connections_are_closed_first(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "client_connection_limits", lambda reserved: (4, 8))
    gateway = await make_gateway(routes=ROUTES, keepalive_timeout=30)
    port = port_of(gateway.url)
    kept_alive = []
    for _ in range(4):  # idle since their answers, the first the longest
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request())
        assert parse_answer(await read_answer(reader)).status == 200
        kept_alive.append((reader, writer))
        await asyncio.sleep(0.05)
    newcomers = []
    for _ in range(2):  # each past the limit of 4: one idle connection closed for each
        newcomers.append(await asyncio.open_connection("127.0.0.1", port))
        await asyncio.sleep(0.1)
    closed = [await closed_by_server(reader, 0.5) for reader, _ in kept_alive]
    for _, writer in kept_alive + newcomers:
        writer.close()
    assert closed == [True, True, False, False]
