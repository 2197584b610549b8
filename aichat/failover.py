"""Retries and fallbacks: find an upstream that starts answering.

Only the part before the first event is retried: once a client has received part of an
answer, a failure ends its stream with an error event instead (see ``aichat.sse``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from aichat.errors import UpstreamError
from aichat.metrics import Metrics
from aichat.providers.base import Event, EventStream
from aichat.routing import Target
from aichat.schemas import ChatCompletionRequest

log = logging.getLogger("aichat.failover")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry one upstream before its fallbacks."""

    retries: int = 2
    backoff: float = 0.25
    max_wait: float = 5.0
    metrics: Metrics | None = None  # where attempts, retries and first-token times go

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based), or None to give up.

        Exponential backoff with full jitter, never shorter than the upstream's
        ``Retry-After``; a ``Retry-After`` beyond ``max_wait`` means: go to the fallbacks.
        """
        if retry >= self.retries:
            return None
        wait = random.uniform(0, self.backoff * 2**retry)
        if retry_after is not None:
            if retry_after > self.max_wait:
                return None
            wait = max(wait, retry_after)
        return min(wait, self.max_wait)


@dataclass(slots=True)
class Answer:
    """An upstream answer that has started: its first event and the rest to come."""

    target: Target
    first: Event
    events: EventStream
    attempts: int


async def _start(target: Target, request: ChatCompletionRequest) -> Answer:
    events = target.provider.stream(request, target.upstream_model)
    try:
        first = await anext(events, None)
    except BaseException:
        await events.aclose()
        raise
    if first is None:
        await events.aclose()
        raise UpstreamError(f"{target.provider.name} upstream sent no answer.")
    return Answer(target, first, events, 0)


class CircuitOpen(UpstreamError):
    """Every upstream of the chain has an open circuit: fail fast (503)."""

    status = 503
    code = "upstream_unavailable"

    def __init__(self, chain: list[Target]) -> None:
        names = ", ".join(target.label for target in chain)
        super().__init__(
            f"Upstream unavailable (circuit open after repeated failures): {names}.",
            retryable=False,
        )
        self.headers["Retry-After"] = "5"


def _failed(policy: RetryPolicy, target: Target, attempt: int, err: UpstreamError) -> None:
    target.breaker.failure()
    log.warning(
        "upstream attempt failed",
        extra={"fields": {"target": target.label, "attempt": attempt, "error": err.code}},
    )
    if policy.metrics is not None:
        policy.metrics.upstream_errors.labels(target.label, err.code or "-").inc()


async def open_answer(
    chain: list[Target], request: ChatCompletionRequest, policy: RetryPolicy
) -> Answer:
    """The first target in ``chain`` that starts answering, retrying retryable failures.

    Targets whose circuit is open are skipped. Non-retryable errors (a bad request, an
    upstream 4xx) are raised at once; when every target has failed, the last error is
    raised, or ``CircuitOpen`` if none could even be tried.
    """
    started = time.perf_counter()
    attempts = 0
    last_error: UpstreamError | None = None
    for target in chain:
        retry = 0
        while target.breaker.allow():
            attempts += 1
            try:
                answer = await _start(target, request)
            except UpstreamError as err:
                if not err.retryable:
                    target.breaker.success()  # it answered; it only refused this request
                    raise
                last_error = err
                _failed(policy, target, attempts, err)
                wait = policy.delay(retry, err.retry_after)
                if wait is None:
                    break
                retry += 1
                if policy.metrics is not None:
                    policy.metrics.retries.labels(target.label).inc()
                await asyncio.sleep(wait)
                continue
            target.breaker.success()
            answer.attempts = attempts
            if policy.metrics is not None:
                elapsed = time.perf_counter() - started
                policy.metrics.observe_first_token(chain[0].name, elapsed)
            return answer
    raise last_error or CircuitOpen(chain)
