"""Retries and fallbacks: find an upstream that starts answering.

Only the part before the first event is retried: once a client has received part of an
answer, a failure ends its stream with an error event instead (see ``aichat.answer.sse``).
A prompt longer than a model's context window is the one refusal that a fallback can help
with, but only one with a larger window: such a refusal goes to the route's
``context_fallbacks``, never to its ordinary ``fallbacks`` or a retry.

Each failed attempt is logged with its cause; each change of an upstream's circuit (opened,
half-open, closed) is logged with the upstream and its last error. The error a client gets
names the upstream and the cause, and carries the upstream and attempt count for the
request's access line. When a fallback chain fails as a whole, the message also lists what
became of every upstream tried (:func:`_chain_summary`): each model's name and each error
code (which an upstream may have chosen) as JSON strings, the rest numbers and words of the
gateway's own (the status, or "circuit open"), so no upstream's text can pose as another
entry; at most ``MAX_LISTED`` entries, a code at most ``MAX_CODE`` characters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aichat.answer.routing import Target
from aichat.core.errors import ContextOverflow, UpstreamError
from aichat.core.prompt import Prompt
from aichat.core.trace import RequestTrace
from aichat.operations.breaker import State
from aichat.operations.metrics import Metrics
from aichat.operations.shared_circuits import SharedCircuits
from aichat.operations.tracing import traced
from aichat.providers.base import Event, EventStream

log = logging.getLogger("aichat.failover")

MAX_LISTED = 8  # upstreams a failed chain's message names
MAX_CODE = 64  # characters of an error code there


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry one upstream before its fallbacks."""

    retries: int = 2
    backoff: float = 0.25
    max_wait: float = 5.0
    metrics: Metrics | None = None  # where attempts, retries and first-token times go
    # The upstreams' circuits: this process's own, the gateway's once attached (--workers).
    circuits: SharedCircuits = field(default_factory=SharedCircuits)

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


async def _start(
    target: Target, prompt: Prompt, trace: RequestTrace | None, attempt: int
) -> Answer:
    events = traced(
        trace, target, attempt, prompt, target.provider.stream(prompt, target.upstream_model)
    )
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
    """Every upstream of the chain has an open circuit: fail fast (503).

    The message names each upstream's last error; ``Retry-After`` is the time until the
    first of them may be tried again.
    """

    status = 503
    code = "upstream_unavailable"

    def __init__(self, chain: list[Target]) -> None:
        causes = "; ".join(
            f"{target.label}: {target.breaker.last_error or 'failing'}" for target in chain
        )
        wait = max(1, math.ceil(min(target.breaker.retry_in() for target in chain)))
        super().__init__(
            f"Upstream unavailable: circuit open after repeated failures ({causes}). "
            f"Next try in {wait} s.",
            retryable=False,
            cause=f"circuit open ({causes})",
        )
        self.headers["Retry-After"] = str(wait)


_TRANSITIONS: dict[State, tuple[int, str]] = {
    "open": (logging.WARNING, "circuit opened: requests skip this upstream"),
    "half_open": (logging.INFO, "circuit half-open: one trial request goes through"),
    "closed": (logging.INFO, "circuit closed: the upstream answers again"),
}


def _log_transition(target: Target, before: State) -> None:
    after = target.breaker.state
    if after == before:
        return
    level, message = _TRANSITIONS[after]
    report = target.breaker.report()
    fields: dict[str, object] = {"upstream": target.label, "last_error": report.last_error}
    if after == "open":
        fields["retry_in_s"] = report.retry_in_seconds
    log.log(level, message, extra={"fields": fields})


def _failed(policy: RetryPolicy, target: Target, attempt: int, err: UpstreamError) -> None:
    log.warning(
        "upstream attempt failed",
        extra={
            "fields": {
                "target": target.label,
                "attempt": attempt,
                "error": err.code,
                "cause": err.cause,
            }
        },
    )
    if policy.metrics is not None:
        policy.metrics.upstream_error(target.metric_label, err.code)


def _outcome(err: UpstreamError) -> str:
    """``502 "upstream_error"``: an error's status and code, as :func:`_chain_summary` lists it."""
    return f"{err.status} {json.dumps(str(err.code)[:MAX_CODE])}"


def _chain_summary(outcomes: list[tuple[Target, str]]) -> str:
    """``"a" 502 "upstream_error", "b" circuit open``: what became of each upstream tried."""
    listed = [f"{json.dumps(target.name)} {outcome}" for target, outcome in outcomes]
    if len(listed) > MAX_LISTED:
        listed[MAX_LISTED:] = [f"and {len(listed) - MAX_LISTED} more"]
    return ", ".join(listed)


def _given_up(
    err: UpstreamError, target: Target, attempts: int, outcomes: list[tuple[Target, str]]
) -> UpstreamError:
    err.upstream, err.attempts = target.label, attempts
    if len(outcomes) > 1:  # one upstream's error says it all; a chain's needs each of them
        err.message += f" Every upstream of the fallback chain failed: {_chain_summary(outcomes)}."
    return err


def _overflowed(target: Target, queue: list[Target], done: int, larger: Sequence[Target]) -> bool:
    """After ``target`` (``queue[done - 1]``) found the prompt too long: make the rest of
    ``queue`` the larger models not yet tried; whether there is one."""
    tried = {earlier.name for earlier in queue[:done]}
    queue[done:] = [model for model in larger if model.name not in tried]
    if queue[done:]:
        log.info(
            "prompt longer than the context window: a larger model is tried",
            extra={"fields": {"target": target.label, "next": queue[done].label}},
        )
    return bool(queue[done:])


async def open_answer(
    chain: list[Target],
    prompt: Prompt,
    policy: RetryPolicy,
    trace: RequestTrace | None = None,
    larger: Sequence[Target] = (),
) -> Answer:
    """The first target in ``chain`` that starts answering, retrying retryable failures.

    Targets whose circuit is open are skipped. Non-retryable errors (a bad request, an
    upstream 4xx) are raised at once; when every target has failed, the last error is
    raised, or ``CircuitOpen`` if none could even be tried. A target's circuit counts the
    request as one failure once its retries are spent. A prompt too long for a target's
    window (``ContextOverflow``) is neither retried nor counted against its circuit: the
    models of ``larger`` not yet tried (the requested model's ``context_fallbacks``) take
    the place of the rest of the chain, and with none left the overflow is raised. With a
    ``trace``, every attempt has a span. A chain that failed as a whole names each
    upstream's outcome in the message.
    """
    started = time.perf_counter()
    attempts = 0
    last_error: tuple[UpstreamError, Target] | None = None
    outcomes: list[tuple[Target, str]] = []  # each upstream given up on, and why
    queue = list(chain)
    done = 0
    while done < len(queue):
        target = queue[done]
        done += 1
        breaker, before = target.breaker, target.breaker.state
        circuits = policy.circuits
        allowed = await circuits.allow(breaker)
        _log_transition(target, before)
        if not allowed:
            outcomes.append((target, "circuit open"))
        retry = 0
        while allowed:
            attempts += 1
            try:
                answer = await _start(target, prompt, trace, attempts)
            except UpstreamError as err:
                before = breaker.state
                if not err.retryable:
                    circuits.success(breaker)  # it answered; it only refused this request
                    _log_transition(target, before)
                    outcomes.append((target, _outcome(err)))
                    if isinstance(err, ContextOverflow) and _overflowed(
                        target, queue, done, larger
                    ):
                        last_error = err, target
                        break
                    raise _given_up(err, target, attempts, outcomes) from None
                last_error = err, target
                _failed(policy, target, attempts, err)
                wait = policy.delay(retry, err.retry_after)
                if wait is None:
                    circuits.failure(breaker, err.cause)
                    _log_transition(target, before)
                    outcomes.append((target, _outcome(err)))
                    break
                retry += 1
                if policy.metrics is not None:
                    policy.metrics.retries.labels(target.metric_label).inc()
                await asyncio.sleep(wait)
                continue
            before = breaker.state
            circuits.success(breaker)
            _log_transition(target, before)
            answer.attempts = attempts
            if policy.metrics is not None:
                elapsed = time.perf_counter() - started
                policy.metrics.observe_first_token(chain[0].metric_name, elapsed)
            return answer
    if last_error is not None:
        raise _given_up(*last_error, attempts, outcomes)
    raise _given_up(CircuitOpen(chain), chain[0], 0, [])  # its message names every upstream
