"""Per-request values that middlewares and handlers share, under typed keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID = web.RequestKey("request_id", str)
# Extra fields for the request's access-log line (model, stream, error code, ...).
LOG_FIELDS = web.RequestKey("log_fields", dict[str, Any])


def log_field(request: web.Request, **fields: Any) -> None:
    """Add fields to the request's access-log line (no-op outside the logging middleware)."""
    line = request.get(LOG_FIELDS)
    if line is not None:
        line.update(fields)
