"""A circuit breaker per upstream: stop sending requests to one that keeps failing.

Closed: requests flow. After ``threshold`` consecutive failures it opens: requests skip
this upstream (to its fallbacks, or a fast 503) for ``cooldown`` seconds. Then one trial
request is let through (half-open): success closes the circuit, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "half_open", "open"]


class CircuitBreaker:
    """Tracks one upstream's consecutive failures; ``threshold`` 0 disables it."""

    __slots__ = (
        "_clock",
        "_cooldown",
        "_failures",
        "_opened_at",
        "_threshold",
        "_trial_at",
        "state",
    )

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._trial_at = 0.0
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
        self._failures = 0
        self.state = "closed"

    def failure(self) -> None:
        """The upstream failed: count it, and open the circuit past the threshold."""
        if not self._threshold:
            return
        self._failures += 1
        if self.state == "half_open" or self._failures >= self._threshold:
            self.state = "open"
            self._opened_at = self._clock()
