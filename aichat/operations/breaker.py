"""A circuit breaker per upstream: stop sending requests to one that keeps failing.

Closed: requests flow. After ``threshold`` consecutive failed requests it opens: requests
skip this upstream (to its fallbacks, or a fast 503) for ``cooldown`` seconds. Then one
trial request is let through (half-open): success closes the circuit, failure opens it again.

A failed request counts once, however many attempts its retries made: the retries already
said the upstream is down for that request, and counting each one would let a single
client (whose SDK retries too) open the circuit before it ever saw the real error.

The breaker is only the state machine and what explains it (the last error, the time left);
the router logs its transitions. With ``--workers``, each breaker (named for its route) also
follows the supervisor's one for the whole gateway (``aichat.operations.shared_circuits``):
``export`` and ``adopt`` carry its state, in monotonic-clock times every process on the
host shares.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

State = Literal["closed", "half_open", "open"]


@dataclass(frozen=True, slots=True)
class CircuitReport:
    """One upstream's circuit as ``GET /ready?verbose=1`` shows it."""

    state: State
    consecutive_failures: int
    last_error: str | None
    last_error_seconds_ago: float | None
    retry_in_seconds: float | None  # open or on trial: until the next request may go
    # None until it first answers: "closed" alone does not say an upstream works.
    last_answer_seconds_ago: float | None = None


class CircuitBreaker:
    """Tracks one upstream's consecutive failures; ``threshold`` 0 disables it."""

    __slots__ = (
        "_answered_at",
        "_clock",
        "_cooldown",
        "_failed_at",
        "_failures",
        "_opened_at",
        "_threshold",
        "_trial_at",
        "last_error",
        "name",
        "state",
    )

    def __init__(
        self,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        self.name = name  # the route's: what the workers' breakers of one upstream share
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._trial_at = 0.0
        self._failed_at = 0.0
        self._answered_at: float | None = None
        self.last_error: str | None = None
        self.state: State = "closed"

    def allow(self) -> bool:
        """Whether a request may go to this upstream now."""
        if self.state == "closed":
            return True
        now = self._clock()
        if self.state == "open" and now - self._opened_at >= self._cooldown:
            self.state = "half_open"
            self._trial_at = now
            return True
        # A trial that never reported back (its client left) must not block for ever.
        if self.state == "half_open" and now - self._trial_at >= self._cooldown:
            self._trial_at = now
            return True
        return False

    def success(self) -> None:
        """The upstream answered: close the circuit."""
        self._answered_at = self._clock()
        self._failures = 0
        self.state = "closed"

    def failure(self, cause: str) -> None:
        """A request failed on this upstream: count it, and open the circuit past the threshold."""
        self.last_error = cause
        self._failed_at = self._clock()
        if not self._threshold:
            return
        self._failures += 1
        if self.state == "half_open" or self._failures >= self._threshold:
            self.state = "open"
            self._opened_at = self._failed_at

    @property
    def settings(self) -> tuple[int, float]:
        """The threshold and the cooldown."""
        return self._threshold, self._cooldown

    @property
    def failures(self) -> int:
        """Consecutive failed requests counted so far."""
        return self._failures

    def export(self) -> list[Any]:
        """The whole state, for ``adopt`` in another breaker of the same upstream."""
        return [
            self.state,
            self._failures,
            self.last_error,
            self._opened_at,
            self._trial_at,
            self._failed_at,
        ]

    def adopt(self, exported: list[Any]) -> None:
        """Take on the state another breaker ``export``-ed."""
        state, failures, last_error, opened_at, trial_at, failed_at = exported
        if state not in ("closed", "half_open", "open"):
            raise ValueError(f"unknown circuit state {state!r}")
        self.state = state
        self._failures = int(failures)
        self.last_error = None if last_error is None else str(last_error)
        self._opened_at, self._trial_at = float(opened_at), float(trial_at)
        self._failed_at = float(failed_at)

    def retry_in(self) -> float:
        """Seconds until this upstream may be tried again (0 when it may be now)."""
        if self.state == "closed":
            return 0.0
        since = self._opened_at if self.state == "open" else self._trial_at
        return max(0.0, self._cooldown - (self._clock() - since))

    def report(self) -> CircuitReport:
        """The state, the failures behind it and the last error, for people to read."""
        return CircuitReport(
            self.state,
            self._failures,
            self.last_error,
            None if self.last_error is None else round(self._clock() - self._failed_at, 1),
            None if self.state == "closed" else round(self.retry_in(), 1),
            None if self._answered_at is None else round(self._clock() - self._answered_at, 1),
        )
