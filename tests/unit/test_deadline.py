"""``Deadline``: the upstream read timer that moves without touching the loop's timers."""

from __future__ import annotations

import asyncio

import pytest

from aichat.providers.http import Deadline


async def _wait_under(deadline: Deadline, seconds: float) -> None:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if deadline.timed_out():
            raise TimeoutError from None
        raise


async def test_an_await_past_its_due_time_is_cancelled_as_a_timeout() -> None:
    deadline = Deadline(asyncio.get_running_loop(), 0.05)
    with pytest.raises(TimeoutError):
        await _wait_under(deadline, 5)
    deadline.close()


async def test_moving_the_deadline_later_keeps_an_active_stream_alive() -> None:
    # Reads that keep coming, each well within the limit, for longer than the limit.
    deadline = Deadline(asyncio.get_running_loop(), 0.1)
    for _ in range(6):
        deadline.wait(0.1)
        await _wait_under(deadline, 0.04)
    deadline.close()


async def test_a_shorter_wait_than_the_armed_one_takes_effect() -> None:
    # A long first-byte limit, then a short idle limit: the idle one must fire on time.
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop, 30)
    deadline.wait(0.05)
    started = loop.time()
    with pytest.raises(TimeoutError):
        await _wait_under(deadline, 5)
    assert loop.time() - started < 1
    deadline.close()


async def test_nothing_fires_while_the_caller_holds_a_chunk() -> None:
    # ``due`` None: a slow client is not an idle upstream.
    deadline = Deadline(asyncio.get_running_loop(), 0.05)
    deadline.due = None
    await _wait_under(deadline, 0.15)
    deadline.close()


async def test_another_cancellation_is_not_taken_for_a_timeout() -> None:
    deadline = Deadline(asyncio.get_running_loop(), 5)
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().call_later(0.02, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await _wait_under(deadline, 5)
    task.uncancel()
    deadline.close()


async def test_the_total_deadline_ends_reads_that_each_came_in_time() -> None:
    # Every read well within the idle limit, a trickle: the total ends it, and says so.
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop, 1, total=0.2)
    started = loop.time()

    async def trickle() -> None:
        for _ in range(100):  # three seconds, if nothing ended it
            deadline.wait(1)
            await _wait_under(deadline, 0.03)

    with pytest.raises(TimeoutError):
        await trickle()
    assert deadline.overall
    assert loop.time() - started < 1.5
    deadline.close()


async def test_the_total_deadline_counts_time_the_caller_held_a_chunk() -> None:
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop, 1, total=0.1)
    deadline.due = None
    await asyncio.sleep(0.15)  # a slow client: nothing fires meanwhile
    deadline.wait(1)  # the next read is already past the total
    with pytest.raises(TimeoutError):
        await _wait_under(deadline, 1)
    assert deadline.overall
    deadline.close()


async def test_an_idle_timeout_is_not_the_total_deadline() -> None:
    deadline = Deadline(asyncio.get_running_loop(), 0.05, total=10)
    with pytest.raises(TimeoutError):
        await _wait_under(deadline, 1)
    assert not deadline.overall
    deadline.close()


async def test_a_deadline_brought_forward_ends_reads_that_each_come_in_time() -> None:
    # The end of a body after [DONE]: reads within the idle limit, but not past the grace.
    loop = asyncio.get_running_loop()
    deadline = Deadline(loop, 5)
    deadline.end_within(0.2)
    deadline.end_within(30)  # never later
    started = loop.time()

    async def read_every_50ms() -> None:
        for _ in range(100):
            deadline.wait(5)
            await _wait_under(deadline, 0.05)

    with pytest.raises(TimeoutError):
        await read_every_50ms()
    assert 0.15 < loop.time() - started < 1
    deadline.close()
