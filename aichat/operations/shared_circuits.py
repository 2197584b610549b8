"""Upstream circuits of ``aichat serve --workers N``: one per route for the whole gateway.

Decisions:

- The supervisor keeps the circuit that counts (``CircuitHub``, a ``CircuitBreaker`` per
  route name); each worker's breakers follow it (``SharedCircuits``). A worker tells the
  supervisor each failed request, and each success that ends a run of failures; the
  supervisor sends every change of its circuit to all workers. So consecutive failures are
  counted across workers, and a circuit opened by one worker's requests is open in all.
- A closed circuit costs nothing more: requests pass on the worker's own state, and a
  success after a success is not sent. Only while a circuit is not closed does a worker ask
  the supervisor before trying the upstream, so that once the cooldown is over exactly one
  trial request goes, gateway-wide, as with one process.
- If the link does not answer, a worker decides on its own state, as it would alone: a
  circuit must not keep an upstream from being tried for want of the supervisor.
- One process uses a ``SharedCircuits`` too, never attached: each call is then just its
  breaker's, so the answering code has one path for both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from aichat.operations.breaker import CircuitBreaker
from aichat.operations.link import Handler, Link
from aichat.operations.redis_pool import StoreBusy, StoreUnavailable


class SharedCircuits:
    """A worker's side: its breakers follow the supervisor's, once ``attach``-ed (until
    then, and in one process, each call is the breaker's own)."""

    def __init__(self) -> None:
        self._link: Link | None = None
        self._breakers: Callable[[], Iterable[CircuitBreaker]] = tuple

    def attach(self, link: Link, breakers: Callable[[], Iterable[CircuitBreaker]]) -> None:
        """Follow the supervisor over ``link``; ``breakers``: this worker's, as they are now."""
        self._link = link
        self._breakers = breakers

    def handlers(self) -> dict[str, Handler]:
        """What this worker answers the supervisor about circuits."""
        return {"circuit": self._adopt}

    async def _adopt(self, name: str, exported: list[Any]) -> None:
        for breaker in {id(b): b for b in self._breakers() if b.name == name}.values():
            breaker.adopt(exported)

    async def allow(self, breaker: CircuitBreaker) -> bool:
        """Whether a request may go to ``breaker``'s upstream now, gateway-wide."""
        if breaker.state == "closed" or self._link is None:
            return breaker.allow()
        try:
            allowed, exported = await self._link.ask(
                "circuit_allow", breaker.name, *breaker.settings
            )
        except (StoreUnavailable, StoreBusy):
            return breaker.allow()
        breaker.adopt(exported)
        return bool(allowed)

    def success(self, breaker: CircuitBreaker) -> None:
        """The upstream answered: close the circuit, here and in the supervisor."""
        ends_failures = breaker.failures > 0 or breaker.state != "closed"
        breaker.success()
        if ends_failures:
            self._tell("circuit_success", breaker)

    def failure(self, breaker: CircuitBreaker, cause: str) -> None:
        """A request failed on the upstream: count it here and in the supervisor."""
        breaker.failure(cause)
        self._tell("circuit_failure", breaker, cause)

    def _tell(self, op: str, breaker: CircuitBreaker, *args: str) -> None:
        if self._link is not None:
            with contextlib.suppress(StoreUnavailable):  # this worker's own state holds
                self._link.notice(op, breaker.name, *breaker.settings, *args)


class CircuitHub:
    """The supervisor's side: one breaker per route, its changes sent to every worker."""

    def __init__(
        self, broadcast: Callable[[str, list[Any]], None], clock: Callable[[], float]
    ) -> None:
        self._broadcast = broadcast
        self._clock = clock  # the breakers' (time.monotonic: the same in every process)
        self._breakers: dict[str, CircuitBreaker] = {}

    def _breaker(self, name: str, threshold: int, cooldown: float) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None or breaker.settings != (threshold, cooldown):  # new, or reloaded
            breaker = CircuitBreaker(threshold, cooldown, self._clock, name=name)
            self._breakers[name] = breaker
        return breaker

    def _changed(self, breaker: CircuitBreaker, before: list[Any]) -> list[Any]:
        exported = breaker.export()
        if exported != before:
            self._broadcast(breaker.name, exported)
        return exported

    def handlers(self) -> dict[str, Handler]:
        """What the supervisor answers workers about circuits."""

        async def circuit_failure(name: str, threshold: int, cooldown: float, cause: str) -> None:
            breaker = self._breaker(str(name), int(threshold), float(cooldown))
            before = breaker.export()
            breaker.failure(str(cause))
            self._changed(breaker, before)

        async def circuit_success(name: str, threshold: int, cooldown: float) -> None:
            breaker = self._breaker(str(name), int(threshold), float(cooldown))
            before = breaker.export()
            breaker.success()
            self._changed(breaker, before)

        async def circuit_allow(name: str, threshold: int, cooldown: float) -> list[Any]:
            breaker = self._breaker(str(name), int(threshold), float(cooldown))
            before = breaker.export()
            allowed = breaker.allow()
            return [allowed, self._changed(breaker, before)]

        return {
            "circuit_failure": circuit_failure,
            "circuit_success": circuit_success,
            "circuit_allow": circuit_allow,
        }
