"""Structured logs: one access line per request, with a request id echoed to the client.

Only request metadata is logged (method, path, status, model, stream, timing, sizes): never
headers, keys or message contents. Some of it is chosen by a client or an upstream (a model
name, an upstream's error code): in text logs every control character, line or paragraph
separator, bidirectional override and backslash in a message or value is written as an
escape, and values with spaces are quoted, so no value can forge a line or a field, or
reach a terminal as a command. JSON logs escape them by being JSON.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from aichat.core.context import LOG_FIELDS, REQUEST_ID, Handler
from aichat.core.ids import new_id
from aichat.operations.metrics import METRICS
from aichat.operations.timing import TIMING, Timing, overhead_fields

access_log = logging.getLogger("aichat.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A client-chosen id is echoed only if it is short and plain: it ends up in logs and headers.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class _StampedFormatter(logging.Formatter):
    """Formats a record's time once per second: ``strftime`` for every access line was a
    good part of the line's cost."""

    _stamped: tuple[int, str | None, str] = (-1, None, "")

    def formatTime(  # noqa: N802 (logging's name)
        self, record: logging.LogRecord, datefmt: str | None = None
    ) -> str:
        """``datefmt`` (logging's default when None, with milliseconds) for ``record``."""
        second, fmt, stamp = self._stamped
        if int(record.created) != second or datefmt != fmt:
            stamp = time.strftime(
                datefmt or self.default_time_format, self.converter(record.created)
            )
            self._stamped = (int(record.created), datefmt, stamp)
        if datefmt is None:
            return f"{stamp},{int(record.msecs):03d}"  # as logging's default_msec_format
        return stamp


class JsonFormatter(_StampedFormatter):
    """One JSON object per line: time, level, logger, message and any structured extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NEEDS_QUOTES = re.compile(r'[\s="]')


def _escaped_char(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def escape(text: str) -> str:
    """``text`` with every character that could end or rewrite a log line escaped."""
    return _UNSAFE.sub(_escaped_char, text)


def _value(value: Any) -> str:
    if value is None or type(value) in (int, float, bool):
        return str(value)  # most of an access line's fields: nothing in them to escape
    text = escape(str(value))
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + text.replace('"', '\\"') + '"'


class TextFormatter(_StampedFormatter):
    """Human-readable lines; structured extras appended as ``key=value``, all escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        """The line without the traceback, its message escaped."""
        record.message = escape(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` with its structured fields after the message."""
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={_value(v)}" for k, v in fields.items())
        return line


def quiet_malformed_requests(record: logging.LogRecord) -> bool:
    """Log filter: a request aiohttp cannot even parse is the client's fault, not an error.

    aiohttp logs each one at ERROR with a traceback, so anyone could fill the logs with
    garbage bytes. Such records become one INFO line without the traceback.
    """
    exc = record.exc_info[1] if record.exc_info else None
    if record.name == "aiohttp.server" and isinstance(exc, HttpProcessingError):
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.msg, record.args = "malformed HTTP request: %s", (type(exc).__name__,)
        record.exc_info = record.exc_text = None
    return True


def configure_logging(fmt: str, level: str) -> None:
    """Send all ``aichat`` logs to stderr in the chosen format."""
    # Nothing aichat writes shows the caller's file and line, thread or process, which
    # every record would otherwise gather (the first by walking up the stack): off, as the
    # logging HOWTO's "Optimization" section describes. About a third of an access line.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(quiet_malformed_requests)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _SAFE_ID.fullmatch(given) else new_id(hex_digits=16)


def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """The request id, on every response, streamed or not."""
    if REQUEST_ID in request:
        response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]


def _size(response: web.StreamResponse) -> int:
    # A plain Response is sent after the middlewares return; a stream has been sent already.
    # (getattr: isinstance against aiohttp's response classes goes through ABCMeta.)
    body = getattr(response, "body", None)
    return len(body) if isinstance(body, bytes) else response.body_length


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Start the request's clock, assign its id, and write one access line when it ends."""
    timing = request[TIMING] = Timing(time.perf_counter())
    request[REQUEST_ID] = _request_id(request)
    extra: dict[str, Any] = {}
    request[LOG_FIELDS] = extra
    status, size = 499, 0  # 499: the client went away before an answer was complete
    try:
        response = await handler(request)
        status, size = response.status, _size(response)
        return response
    finally:
        now = time.perf_counter()
        seconds = now - timing.arrived
        if request.path.startswith("/v1/"):
            request.app[METRICS].observe_request(status, extra, seconds)
        if access_log.isEnabledFor(logging.INFO):
            fields: dict[str, Any] = {
                "method": request.method,
                "path": request.rel_url.raw_path,  # still percent-encoded: no line breaks
                "status": status,
                "model": None,
                "stream": None,
                "duration_ms": round(seconds * 1000, 2),
                "bytes_out": size,
            }
            fields.update(extra, request_id=request[REQUEST_ID])
            fields.update(overhead_fields(timing, now))
            access_log.info("request", extra={"fields": fields})
