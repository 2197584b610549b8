"""Per-request values that middlewares and handlers share, under typed keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from aichat.auth import KeyPolicy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID = web.RequestKey("request_id", str)
# Extra fields for the request's access-log line (model, stream, error code, ...).
LOG_FIELDS = web.RequestKey("log_fields", dict[str, Any])


def log_field(request: web.Request, **fields: Any) -> None:
    """Add fields to the request's access-log line (no-op outside the logging middleware)."""
    if LOG_FIELDS in request:
        request[LOG_FIELDS].update(fields)


# The policy of the key that authenticated this request (set by the auth middleware).
KEY_POLICY: web.RequestKey[KeyPolicy] = web.RequestKey("key_policy")
