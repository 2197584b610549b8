"""The circuit breaker's state machine, on a hand-driven clock."""

from __future__ import annotations

from aichat.operations.breaker import CircuitBreaker, CircuitReport


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


def test_report_says_why_and_until_when() -> None:
    clock = Clock()
    breaker = CircuitBreaker(2, cooldown=30, clock=clock)
    assert breaker.report() == CircuitReport("closed", 0, None, None, None)
    breaker.failure("HTTP 500 from up:443")
    clock.now = 4
    breaker.failure("cannot connect to up:443 (Connection refused)")
    clock.now = 10
    assert breaker.retry_in() == 24  # opened at 4, for 30 s
    assert breaker.report() == CircuitReport(
        "open", 2, "cannot connect to up:443 (Connection refused)", 6.0, 24.0
    )
    clock.now = 34
    assert breaker.allow()  # the trial
    assert breaker.report().retry_in_seconds == 30.0  # others wait for it, at most a cooldown
    breaker.success()
    report = breaker.report()
    assert (report.state, report.consecutive_failures, report.retry_in_seconds) == (
        "closed",
        0,
        None,
    )
    assert report.last_error == "cannot connect to up:443 (Connection refused)"  # kept, aging


def test_disabled_breaker_still_remembers_the_last_error() -> None:
    breaker = CircuitBreaker(0, cooldown=5, clock=Clock())
    breaker.failure("DNS lookup of up:443 failed")
    assert breaker.allow()
    assert breaker.report().last_error == "DNS lookup of up:443 failed"
