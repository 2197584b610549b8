"""The link between ``--workers`` processes and their supervisor: bounded, ordered, and failing
safe (``AICHAT_REDIS_FAILURE``) when the other end is broken, silent or gone.

Both ends are real ``Link`` objects over a real socket pair; a broken peer is a raw socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aichat.core.exchange import KeyPolicy
from aichat.operations import shared
from aichat.operations.breaker import CircuitBreaker
from aichat.operations.budgets import Hold
from aichat.operations.limits import Limiter, Overloaded
from aichat.operations.link import MAX_FRAME, MAX_UNSENT, Handler, Link
from aichat.operations.metrics_sum import gateway_metrics, summed, text
from aichat.operations.redis_pool import StoreBusy, StoreUnavailable
from aichat.operations.shared import Hub, SharedCounters, SharedUsage
from aichat.operations.shared_circuits import SharedCircuits


async def _link(sock: socket.socket, **options: Any) -> Link:
    return await Link.over(sock, {}, **options)


@pytest.fixture
async def silent_peer() -> AsyncIterator[tuple[Link, socket.socket]]:
    """A link whose other end is a raw socket that reads nothing and answers nothing."""
    ours, theirs = socket.socketpair()
    link = await _link(ours, timeout=0.2, wait=0.2, max_asks=2)
    yield link, theirs
    await link.close()
    theirs.close()


async def test_a_question_nobody_answers_times_out_as_store_unavailable(
    silent_peer: tuple[Link, socket.socket],
) -> None:
    link, _ = silent_peer
    with pytest.raises(StoreUnavailable, match="no answer to count_request in time"):
        await link.ask("count_request", "team")


async def test_questions_beyond_the_bound_wait_then_get_store_busy() -> None:
    ours, theirs = socket.socketpair()
    link = await _link(ours, timeout=600, wait=0.2, max_asks=2)
    waiting = [asyncio.create_task(link.ask("count_request", "team")) for _ in range(2)]
    await asyncio.sleep(0)  # both have taken their turns, and wait for answers
    with pytest.raises(StoreBusy):
        await link.ask("count_request", "team")
    theirs.close()  # the end of the link answers the two still waiting
    for task in waiting:
        with pytest.raises(StoreUnavailable, match="has ended"):
            await asyncio.wait_for(task, 30)
    await link.close()


async def test_an_oversized_frame_ends_the_link_and_every_question_after_it_fails(
    silent_peer: tuple[Link, socket.socket],
) -> None:
    link, theirs = silent_peer
    asked = asyncio.create_task(link.ask("count_request", "team", seconds=30))
    await asyncio.sleep(0)
    theirs.sendall(struct.pack(">I", MAX_FRAME + 1))  # no body follows: it is never read
    await asyncio.wait_for(link.ended.wait(), 30)
    with pytest.raises(StoreUnavailable, match="has ended"):
        await asyncio.wait_for(asked, 30)  # answered by the end, not by the 30 s timeout
    with pytest.raises(StoreUnavailable, match="has ended"):
        await link.ask("count_request", "team")


async def test_a_frame_that_does_not_parse_ends_the_link(
    silent_peer: tuple[Link, socket.socket],
) -> None:
    link, theirs = silent_peer
    theirs.sendall(struct.pack(">I", 5) + b"{nope")
    await asyncio.wait_for(link.ended.wait(), 30)
    with pytest.raises(StoreUnavailable):
        link.notice("charge", ["2026-12-07", "2026-12"], {"team": 1})


async def test_what_waits_for_a_peer_that_stopped_reading_is_bounded(
    silent_peer: tuple[Link, socket.socket],
) -> None:
    link, _ = silent_peer
    megabyte = "x" * (1 << 20)
    sent = 0
    with contextlib.suppress(StoreUnavailable):
        while sent < MAX_UNSENT // len(megabyte) + 8:  # the socket's own buffer, and more
            link.notice("charge", megabyte)
            sent += 1
    assert sent < MAX_UNSENT // len(megabyte) + 8  # refused before that
    with pytest.raises(StoreUnavailable, match="not reading"):
        await link.ask("count_request", "team")


@pytest.fixture
async def hub() -> AsyncIterator[tuple[Hub, list[Link]]]:
    """A supervisor's hub and two workers' links to it."""
    hub = Hub()
    links = []
    for worker in range(2):
        ours, theirs = socket.socketpair()
        await hub.join(worker, theirs)
        links.append(await _link(ours))
    yield hub, links
    for link in links:
        await link.close()
    await hub.close()


async def test_two_workers_count_one_window_and_share_the_slots(
    hub: tuple[Hub, list[Link]],
) -> None:
    _, (first, second) = hub
    one, two = SharedCounters(first), SharedCounters(second)
    counts = [(await store.count_request("team")).count for store in (one, two, one, two)]
    assert counts == [1, 2, 3, 4]
    assert await one.acquire("team", 2, "lease-1")
    assert await two.acquire("team", 2, "lease-2")
    assert not await one.acquire("team", 2, "lease-3")
    await two.release("team", "lease-2")
    assert await one.acquire("team", 2, "lease-3")  # the release was applied first


async def test_a_charge_then_a_release_are_applied_in_that_order(
    hub: tuple[Hub, list[Link]],
) -> None:
    _, (first, second) = hub
    windows = ("2026-12-07", "2026-12")
    one, two = SharedUsage(first), SharedUsage(second)
    hold = Hold("team", "hold-1")
    assert (await one.hold(windows, hold, 4096, (200, 0)))[0]
    # Held: the other worker's request is refused, as one process would refuse it.
    assert await two.hold(windows, Hold("team", "hold-2"), 10, (200, 0)) == (False, (4096, 4096))
    one.charge(windows, {"team": 256})
    one.release(hold)
    assert await two.hold(windows, Hold("team", "hold-3"), 10, (200, 0)) == (False, (256, 256))
    assert await two.spent(windows, "team") == (256, 256)


async def test_what_a_worker_held_is_given_back_when_its_link_ends(
    hub: tuple[Hub, list[Link]],
) -> None:
    supervisor, (first, second) = hub
    windows = ("2026-12-07", "2026-12")
    assert await SharedCounters(first).acquire("team", 1, "lease-1")
    assert (await SharedUsage(first).hold(windows, Hold("team", "hold-1"), 500, (200, 0)))[0]
    assert not await SharedCounters(second).acquire("team", 1, "lease-2")
    await first.close()  # the worker died
    for _ in range(1000):
        if await SharedCounters(second).acquire("team", 1, "lease-2"):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the dead worker's lease was never given back")
    assert await supervisor.usage.spent(windows, "team") == (0, 0)
    assert (await SharedUsage(second).hold(windows, Hold("team", "hold-2"), 5, (200, 0)))[0]


@pytest.mark.parametrize("failure", ["open", "closed"])
async def test_a_dead_link_is_a_store_down_as_redis_failure_says(failure: str) -> None:
    ours, theirs = socket.socketpair()
    link = await _link(ours)
    theirs.close()  # the supervisor is gone
    await asyncio.wait_for(link.ended.wait(), 30)
    limiter = Limiter(SharedCounters(link), 10, 1.0, fail_open=failure == "open")
    policy = KeyPolicy("team", requests_per_minute=1, max_concurrent=1)
    if failure == "open":
        assert await limiter.check_rate(policy) == {}  # allowed, uncounted (with a warning)
        assert await limiter.check_rate(policy) == {}
    else:
        with pytest.raises(Overloaded):
            await limiter.check_rate(policy)
    await link.close()


def test_workers_metrics_are_summed_and_each_worker_reported() -> None:
    def family(kind: str, name: str, rows: list[list[Any]]) -> list[Any]:
        return [name, kind, "help", "", rows]

    def worker(requests: float, created: float, state: float, lag: float) -> list[list[Any]]:
        return [
            family(
                "counter",
                "aichat_requests",
                [
                    ["aichat_requests_total", {"model": "m"}, requests],
                    ["aichat_requests_created", {"model": "m"}, created],
                ],
            ),
            family("gauge", "aichat_open_streams", [["aichat_open_streams", {}, 2]]),
            family(
                "gauge",
                "aichat_circuit_state",
                [["aichat_circuit_state", {"upstream": "u"}, state]],
            ),
            family(
                "gauge",
                "aichat_event_loop_lag_seconds",
                [["aichat_event_loop_lag_seconds", {}, lag]],
            ),
        ]

    exposition = text(
        summed([("0", True, worker(3, 100, 0, 0.4)), ("1", False, worker(4, 50, 2, 0.3))])
    )
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in text_string_to_metric_families(exposition.decode())
        for sample in metric.samples
    }
    assert samples == {
        ("aichat_requests_total", (("model", "m"),)): 7,
        ("aichat_requests_created", (("model", "m"),)): 50,
        ("aichat_open_streams", ()): 4,
        ("aichat_circuit_state", (("upstream", "u"),)): 2,
        ("aichat_event_loop_lag_seconds", ()): 0.4,  # the latest worker's, not a sum
        ("aichat_worker_up", (("worker", "0"),)): 1,
        ("aichat_worker_up", (("worker", "1"),)): 0,
    }


class Clock:
    """One monotonic clock for the supervisor and both workers, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail("never happened")


async def test_circuits_count_failures_across_workers_and_let_one_trial_through() -> None:
    clock = Clock()
    hub = Hub(clock=clock)
    breakers = [CircuitBreaker(2, 5.0, clock=clock, name="up") for _ in range(2)]
    circuits, links = [], []
    for worker, breaker in enumerate(breakers):
        ours, theirs = socket.socketpair()
        await hub.join(worker, theirs)
        shared = SharedCircuits()
        link = await Link.over(ours, shared.handlers())
        shared.attach(link, lambda breaker=breaker: [breaker])
        circuits.append(shared)
        links.append(link)
    circuits[0].failure(breakers[0], "connection refused")
    circuits[1].failure(breakers[1], "connection refused")
    # Two consecutive failures, one in each worker: the gateway's circuit opens in both.
    await _until(lambda: all(breaker.state == "open" for breaker in breakers))
    assert [await shared.allow(b) for shared, b in zip(circuits, breakers, strict=True)] == [
        False,
        False,
    ]
    clock.now += 5.0  # the cooldown is over: one trial request, gateway-wide
    assert [await shared.allow(b) for shared, b in zip(circuits, breakers, strict=True)] == [
        True,
        False,
    ]
    circuits[0].success(breakers[0])  # the trial answered
    await _until(lambda: all(breaker.state == "closed" for breaker in breakers))
    for link in links:
        await link.close()
    await hub.close()


async def test_a_worker_that_does_not_answer_a_scrape_counts_with_its_last_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shared, "SNAPSHOT_TIMEOUT", 0.2)
    requests = [1, 2, 4]
    stalled = asyncio.Event()

    def answering(worker: int) -> Handler:
        taken = 0

        async def snapshot() -> list[Any]:
            nonlocal taken
            if worker == 2 or (worker == 1 and stalled.is_set()):  # 2: never answers
                await asyncio.Event().wait()  # busy for ever
            taken += 1
            rows = [["aichat_requests_total", {}, requests[worker]]]
            return [taken, [["aichat_requests", "counter", "help", "", rows]]]

        return snapshot

    hub = Hub()
    links = []
    for worker in range(3):
        ours, theirs = socket.socketpair()
        await hub.join(worker, theirs)
        links.append(await Link.over(ours, {"snapshot": answering(worker)}))

    async def scrape() -> dict[str, float]:
        exposition = text(await gateway_metrics(links[0]))
        return {
            f"{sample.name}{sample.labels.get('worker', '')}": sample.value
            for metric in text_string_to_metric_families(exposition.decode())
            for sample in metric.samples
        }

    assert await scrape() == {
        "aichat_requests_total": 3,
        "aichat_worker_up0": 1,
        "aichat_worker_up1": 1,
        "aichat_worker_up2": 0,  # reported down, not left out
    }
    stalled.set()
    requests[0] = 5
    assert await scrape() == {
        "aichat_requests_total": 7,
        "aichat_worker_up0": 1,
        "aichat_worker_up1": 0,
        "aichat_worker_up2": 0,
    }
    for link in links:
        await link.close()
    await hub.close()
