"""The circuit breaker's state machine, on a hand-driven clock."""

from __future__ import annotations

from aichat.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_then_trial_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, cooldown=10, clock=clock)
    for _ in range(2):
        breaker.failure("boom")
        assert breaker.allow()
    breaker.failure("boom")
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now = 10
    assert breaker.allow()  # the one trial
    assert breaker.state == "half_open"
    assert not breaker.allow()  # nobody else while the trial runs
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_failed_trial_opens_again_for_a_full_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, cooldown=5, clock=clock)
    breaker.failure("boom")
    clock.now = 5
    assert breaker.allow()
    breaker.failure("boom")
    assert breaker.state == "open"
    clock.now = 9
    assert not breaker.allow()
    clock.now = 10
    assert breaker.allow()


def test_abandoned_trial_does_not_block_for_ever() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, cooldown=5, clock=clock)
    breaker.failure("boom")
    clock.now = 5
    assert breaker.allow()  # trial starts and never reports back
    clock.now = 9
    assert not breaker.allow()
    clock.now = 10
    assert breaker.allow()


def test_success_resets_the_count_and_zero_disables() -> None:
    breaker = CircuitBreaker(2, cooldown=5)
    breaker.failure("boom")
    breaker.success()
    breaker.failure("boom")
    assert breaker.state == "closed"
    disabled = CircuitBreaker(0, cooldown=5)
    for _ in range(100):
        disabled.failure("boom")
    assert disabled.allow()
