"""Retries and fallbacks: find an upstream that starts answering.

Only the part before the first event is retried: once a client has received part of an
answer, a failure ends its stream with an error event instead (see ``aichat.sse``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from aichat.errors import UpstreamError
from aichat.providers.base import Event
from aichat.routing import Target
from aichat.schemas import ChatCompletionRequest

log = logging.getLogger("aichat.failover")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry one upstream before its fallbacks."""

    retries: int = 2
    backoff: float = 0.25
    max_wait: float = 5.0

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
    events: AsyncGenerator[Event, None]
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


async def open_answer(
    chain: list[Target], request: ChatCompletionRequest, policy: RetryPolicy
) -> Answer:
    """The first target in ``chain`` that starts answering, retrying retryable failures.

    Non-retryable errors (a bad request, an upstream 4xx) are raised at once; when every
    target has failed, the last target's error is raised.
    """
    attempts = 0
    last_error: UpstreamError | None = None
    for target in chain:
        retry = 0
        while True:
            attempts += 1
            try:
                answer = await _start(target, request)
            except UpstreamError as err:
                if not err.retryable:
                    raise
                last_error = err
                log.warning(
                    "upstream attempt failed",
                    extra={
                        "fields": {"target": target.label, "attempt": attempts, "error": err.code}
                    },
                )
                wait = policy.delay(retry, err.retry_after)
                if wait is None:
                    break
                retry += 1
                await asyncio.sleep(wait)
                continue
            answer.attempts = attempts
            return answer
    assert last_error is not None  # chain always holds at least the requested model
    raise last_error
