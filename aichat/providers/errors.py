"""Upstream errors in the client's terms, whatever API the upstream speaks.

OpenAI-compatible servers, the Responses API and Anthropic all answer an error with a body
holding an ``error`` object (``message``, ``type``, and for OpenAI ``code`` and ``param``);
Anthropic wraps it in ``{"type": "error", ...}``. One reader serves them all. The status
and message reach the client as the upstream gave them, and the type (Anthropic's
``overloaded_error``, say) is kept for clients of that API; an upstream refusing the
gateway's own credentials is a 502: the client's key was fine. A prompt too long for the
model (``aichat.providers.overflow``), in any server's words, becomes ``ContextOverflow``,
which each client is told in its API's canonical form.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from aichat.core.errors import ContextOverflow, UpstreamError
from aichat.providers.overflow import context_overflow


def error_object(body: str) -> dict[str, Any]:
    """The ``error`` object of an upstream's error body or event ({} when there is none);
    an error given as a string alone (Ollama's ``{"error": "..."}``) is its message."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, str):
        return {"message": error}
    return error if isinstance(error, dict) else {}


def _overflowed(
    details: dict[str, Any], err: UpstreamError | None = None
) -> ContextOverflow | None:
    """``ContextOverflow`` when the upstream's error ``details`` say the prompt did not fit."""
    found = context_overflow(details)
    if found is None:
        return None
    if err is None:
        return ContextOverflow(found.tokens, found.window)
    cause = f"context window exceeded ({err.cause})"
    return ContextOverflow(
        found.tokens, found.window, upstream_status=err.upstream_status, cause=cause
    )


def json_object(data: bytes | str, what: str) -> dict[str, Any]:
    """``data`` parsed as the JSON object it must be; an upstream error naming ``what`` was
    expected when it is not one (a broken answer: never retried, it would break again)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses but JSON allows: integers past 64 bits
            value = json.loads(data)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        raise UpstreamError(f"Upstream sent {what} that is not a JSON object.", retryable=False)
    return value


def malformed(api: str) -> UpstreamError:
    """The error of an answer whose fields are not what ``api`` sends (never retried)."""
    return UpstreamError(f"Upstream sent an answer that is not in {api}'s format.", retryable=False)


def upstream_error(err: UpstreamError, name: str) -> UpstreamError:
    """An upstream's HTTP error re-shaped for the client, keeping its status and message."""
    status = err.upstream_status
    if status is None or isinstance(err, ContextOverflow):
        return err
    details = error_object(err.upstream_body)
    overflow = _overflowed(details, err)
    if overflow is not None:
        return overflow
    if status in (401, 403):
        message = f"{name} upstream rejected the gateway's credentials (HTTP {status})."
        status = 502
    else:
        message = str(details.get("message") or err.message)
    shaped = UpstreamError(
        message,
        retryable=err.retryable,
        retry_after=err.retry_after,
        upstream_status=err.upstream_status,
        status=status,
        code=str(details["code"]) if details.get("code") else err.code,
        cause=err.cause,
    )
    shaped.type = str(details.get("type") or err.type)
    shaped.param = details.get("param") if isinstance(details.get("param"), str) else None
    if err.retry_after is not None:
        # Clients back off by it: a 429 passed on must keep its Retry-After.
        shaped.headers["Retry-After"] = str(math.ceil(err.retry_after))
    return shaped


def event_error(details: dict[str, Any], name: str, *, retryable: bool) -> UpstreamError:
    """The error an upstream reported as an event of its stream, its type and code kept."""
    overflow = _overflowed(details)
    if overflow is not None:
        return overflow
    message = details.get("message")
    err = UpstreamError(
        f"{name} upstream failed: {message if isinstance(message, str) else 'unknown error'}",
        retryable=retryable,
        code=str(details["code"]) if details.get("code") else None,
    )
    if isinstance(details.get("type"), str):
        err.type = details["type"]
    return err
