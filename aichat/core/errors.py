"""OpenAI-shaped errors and the middleware that renders every failure as one.

Every error a client sees is ``{"error": {"message", "type", "param", "code"}}`` with the
matching HTTP status, whether it came from validation, auth, routing, an upstream or a bug;
paths registered in ``ERROR_RENDERERS`` (the Anthropic API) render the same errors their way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from aichat.core.exchange import EXCHANGE, Handler

log = logging.getLogger("aichat.errors")


class APIError(Exception):
    """An error with everything needed to answer a client in OpenAI's shape."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` object OpenAI clients parse."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> web.Response:
        """This error as a complete JSON response."""
        return web.json_response(self.body(), status=self.status, headers=self.headers)


class InvalidRequest(APIError):
    """The request is malformed or asks for something this route cannot do (400)."""

    status = 400
    type = "invalid_request_error"


class AuthenticationError(APIError):
    """Missing or wrong API key (401)."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(APIError):
    """Unknown model or path (404)."""

    status = 404
    type = "invalid_request_error"


class UpstreamError(APIError):
    """The upstream failed: refused, reset, answered non-2xx or broke its protocol (502).

    ``retryable`` tells the router whether trying again (or a fallback) can help;
    ``retry_after`` carries the upstream's ``Retry-After`` in seconds when it sent one;
    ``upstream_status`` and ``upstream_body`` (its start) are what the upstream answered,
    when it answered at all. ``cause`` is the short reason for logs and circuit reports
    (host and what went wrong, never the upstream's body); ``upstream`` and ``attempts``
    are filled in by the router when it gives up. ``verbatim`` is the upstream's own error
    event, in the API ``verbatim_api``: a client of that API gets it as it came.
    """

    status = 502
    type = "upstream_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        upstream_body: str = "",
        status: int | None = None,
        code: str | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        self.upstream_body = upstream_body
        self.cause = cause or message
        self.upstream: str | None = None
        self.attempts = 0
        self.verbatim: bytes | None = None
        self.verbatim_api: str | None = None


class ContextOverflow(UpstreamError):
    """The prompt does not fit the model's context window: 400 ``context_length_exceeded``.

    Told in OpenAI's words (``message``) or Anthropic's (``prompt_too_long``), with the
    prompt's tokens and the window where the upstream gave them. Never retried: the same
    prompt cannot fit the same model the next time.
    """

    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"

    def __init__(
        self,
        tokens: int | None,
        window: int | None,
        *,
        upstream_status: int | None = None,
        cause: str | None = None,
    ) -> None:
        self.tokens, self.window = tokens, window
        if window is not None:
            told = f"This model's maximum context length is {window} tokens."
            if tokens is not None:
                told += f" However, your messages resulted in {tokens} tokens."
            message = f"{told} Please reduce the length of the messages."
        else:
            message = (
                "Your input exceeds the context window of this model. "
                "Please adjust your input and try again."
            )
        super().__init__(
            message, retryable=False, upstream_status=upstream_status, cause=cause or message
        )

    def prompt_too_long(self) -> str:
        """Anthropic's message for it, which Claude Code reads to compact its conversation."""
        if self.tokens is not None and self.window is not None:
            return f"prompt is too long: {self.tokens} tokens > {self.window} maximum"
        return "prompt is too long"


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect, answer or keep sending in time (504)."""

    status = 504
    code = "upstream_timeout"


_STATUS_CODES = {
    400: ("invalid_request_error", "bad_request"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
}


def from_http_exception(exc: web.HTTPException) -> APIError:
    """Re-shape aiohttp's own HTTP errors (404 route, 405 method, 413 body) for OpenAI clients."""
    err_type, code = _STATUS_CODES.get(exc.status, ("invalid_request_error", None))
    message = {
        404: "Unknown path. See GET /v1/models and POST /v1/chat/completions.",
        405: f"Method not allowed. Allowed: {exc.headers.get('Allow', '')}.",
        413: "Request body is larger than the configured limit (AICHAT_MAX_BODY_BYTES).",
    }.get(exc.status, exc.reason)
    err = APIError(message, code=code, status=exc.status)
    err.type = err_type
    if exc.status == 405 and "Allow" in exc.headers:
        err.headers["Allow"] = exc.headers["Allow"]
    return err


ErrorRenderer = Callable[[APIError], web.Response]
# Paths whose clients expect another error shape than OpenAI's, and how to render it.
ERROR_RENDERERS: web.AppKey[dict[str, ErrorRenderer]] = web.AppKey("error_renderers")


def _respond(request: web.Request, err: APIError) -> web.Response:
    renderers = request.app.get(ERROR_RENDERERS, {})
    return renderers.get(request.path, APIError.response)(err)


def error_event(err: APIError) -> bytes:
    """The SSE event that ends a stream that failed after it started."""
    return b"data: " + json.dumps(err.body()).encode() + b"\n\n"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into an OpenAI error response; never leak a traceback."""
    try:
        return await handler(request)
    except APIError as err:
        request[EXCHANGE].note(error=err.code)
        return _respond(request, err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        shaped = from_http_exception(exc)
        request[EXCHANGE].note(error=shaped.code)
        return _respond(request, shaped)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _respond(request, APIError("Internal server error.", code="internal_error"))
