"""Structured logs: one access line per request, with a request id echoed to the client.

Only request metadata is logged (method, path, status, model, stream, timing, sizes): never
headers, keys or message contents. Some of it is chosen by a client or an upstream (a model
name, an upstream's error code): in text logs every control character, line or paragraph
separator, bidirectional override and backslash in a message or value is written as an
escape, and values with spaces are quoted, so no value can forge a line or a field, or
reach a terminal as a command. JSON logs escape them by being JSON.

The access line is the one record every request writes, so it is the cheapest one: when
aichat's own handler is the only one to see it, it is formatted from its fields and written
without a ``LogRecord`` (``write_access_line``), and a whole answer is sent before it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from logging import INFO
from typing import Any, TextIO

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from aichat.core.exchange import EXCHANGE, Exchange, Handler
from aichat.core.ids import new_id
from aichat.operations.metrics import METRICS
from aichat.operations.timing import overhead_fields

access_log = logging.getLogger("aichat.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A client-chosen id is echoed only if it is short and plain: it ends up in logs and headers.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class _StructuredFormatter(logging.Formatter):
    """A line from a time, a level, a logger, a message and structured fields.

    Times are formatted once per second: ``strftime`` for every access line was a good part
    of the line's cost.
    """

    _stamped: tuple[int, str | None, str] = (-1, None, "")

    def formatTime(  # noqa: N802 (logging's name)
        self, record: logging.LogRecord, datefmt: str | None = None
    ) -> str:
        """``datefmt`` (logging's default when None, with milliseconds) for ``record``."""
        return self.stamp(record.created, record.msecs, datefmt)

    def stamp(self, created: float, msecs: float, datefmt: str | None = None) -> str:
        """``formatTime`` for a record made at ``created``, ``msecs`` into its second."""
        second, fmt, stamp = self._stamped
        if int(created) != second or datefmt != fmt:
            stamp = time.strftime(datefmt or self.default_time_format, self.converter(created))
            self._stamped = (int(created), datefmt, stamp)
        if datefmt is None:
            return f"{stamp},{int(msecs):03d}"  # as logging's default_msec_format
        return stamp

    def line(
        self, created: float, level: str, logger: str, message: str, fields: dict[str, Any]
    ) -> str:
        """The line of a record without a traceback."""
        raise NotImplementedError

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record``, its structured fields (``extra={"fields": ...}``) included."""
        return self.line(*_parts(record))


def _parts(record: logging.LogRecord) -> tuple[float, str, str, str, dict[str, Any]]:
    """What a structured line shows of ``record``, in ``line``'s order."""
    fields = getattr(record, "fields", None) or {}
    return record.created, record.levelname, record.name, record.getMessage(), fields


class JsonFormatter(_StructuredFormatter):
    """One JSON object per line: time, level, logger, message and any structured extras."""

    def line(
        self, created: float, level: str, logger: str, message: str, fields: dict[str, Any]
    ) -> str:
        """The record as a JSON object."""
        entry = {
            "time": self.stamp(created, 0, "%Y-%m-%dT%H:%M:%S"),
            "level": level,
            "logger": logger,
            "message": message,
        }
        entry.update(fields)
        return json.dumps(entry, default=str)

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line, with its traceback (``exc_info``) if it has one."""
        created, level, logger, message, fields = _parts(record)
        if record.exc_info:
            fields = {**fields, "exc_info": self.formatException(record.exc_info)}
        return self.line(created, level, logger, message, fields)


_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NEEDS_QUOTES = re.compile(r'[\s="]')


def _escaped_char(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def escape(text: str) -> str:
    """``text`` with every character that could end or rewrite a log line escaped."""
    return _UNSAFE.sub(_escaped_char, text)


_AS_IS = frozenset({int, float, bool, type(None)})  # nothing in them to escape


def _quoted(value: Any) -> str:
    text = str(value)
    if not text.isprintable() or "\\" in text:  # else nothing for ``escape`` to replace
        text = escape(text)
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def _plain(text: str) -> bool:
    """Whether ``text`` goes into a line as it is: nothing to escape, nothing to quote.

    ``isprintable`` is False for every control, format and separator character but the
    ASCII space, which covers what ``escape`` replaces and every ``\\s`` but the space: the
    four ``in`` are what is left, at about a third of the cost of a regex over the same set.
    """
    return (
        text.isprintable()
        and text != ""
        and " " not in text
        and "=" not in text
        and '"' not in text
        and "\\" not in text
    )


def _fields(fields: dict[str, Any]) -> str:
    """``key=value`` pairs; a loop rather than a call per value: an access line has 15 or so."""
    pairs = []
    for key, value in fields.items():
        kind = type(value)
        if kind in _AS_IS or (kind is str and _plain(value)):
            pairs.append(f"{key}={value}")
        else:
            pairs.append(f"{key}={_quoted(value)}")
    return " ".join(pairs)


class TextFormatter(_StructuredFormatter):
    """Human-readable lines; structured extras appended as ``key=value``, all escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        """The line without the traceback, its message escaped."""
        record.message = escape(record.message)
        return super().formatMessage(record)

    def line(
        self, created: float, level: str, logger: str, message: str, fields: dict[str, Any]
    ) -> str:
        """What the format string gives, without logging's generic steps, then the fields."""
        msecs = (created - int(created)) * 1000
        line = f"{self.stamp(created, msecs)} {level} {logger} {escape(message)}"
        return f"{line} {_fields(fields)}" if fields else line

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` with its structured fields after the message."""
        if not (record.exc_info or record.exc_text or record.stack_info):
            return super().format(record)
        line = logging.Formatter.format(self, record)
        fields = getattr(record, "fields", None)
        return f"{line} {_fields(fields)}" if fields else line


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


class LogHandler(logging.StreamHandler[TextIO]):
    """The handler ``configure_logging`` installs: its stream, with a structured formatter."""

    def __init__(self, stream: TextIO, formatter: _StructuredFormatter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.structured = formatter
        self.addFilter(quiet_malformed_requests)


def _only_handler(logger: logging.Logger) -> LogHandler | None:
    """The ``LogHandler`` that alone receives ``logger``'s INFO records unfiltered, if any."""
    if logger.filters:  # a logger's filters see its own records only, not its children's
        return None
    found = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None or type(handler) is not LogHandler or handler.level > INFO:
                return None
            found = handler
        current = current.parent if current.propagate else None
    return found


def write_access_line(fields: dict[str, Any]) -> None:
    """The access line of one request (the caller has checked that ``aichat.access`` logs INFO).

    Where aichat's own handler is the only one that would see it, the line is formatted and
    written directly: a ``LogRecord`` through the logger, its filters and the handler's
    lock made the one line every request writes 40% dearer (117k against 83k instructions
    under callgrind, formatting included). Anywhere else (another handler, a filter, the
    test suite's capture) it goes through ``logging`` as any record does.
    """
    handler = _only_handler(access_log)
    if handler is None:
        access_log.info("request", extra={"fields": fields})
        return
    line = handler.structured.line(time.time(), "INFO", access_log.name, "request", fields)
    handler.acquire()
    try:
        handler.stream.write(line + handler.terminator)
        handler.flush()
    finally:
        handler.release()


def configure_logging(fmt: str, level: str) -> None:
    """Send all ``aichat`` logs to stderr in the chosen format."""
    # Nothing aichat writes shows the caller's file and line, thread or process, which
    # every record would otherwise gather (the first by walking up the stack): off, as the
    # logging HOWTO's "Optimization" section describes. About a third of an access line.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = LogHandler(sys.stderr, JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _SAFE_ID.fullmatch(given) else new_id(hex_digits=16)


def add_request_id_header(exchange: Exchange, response: web.StreamResponse) -> None:
    """The request id, on every response, streamed or not."""
    response.headers[REQUEST_ID_HEADER] = exchange.request_id


def _size(response: web.StreamResponse) -> int:
    # A plain Response is sent after the middlewares return; a stream has been sent already.
    # (getattr: isinstance against aiohttp's response classes goes through ABCMeta.)
    body = getattr(response, "body", None)
    return len(body) if isinstance(body, bytes) else response.body_length


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Start the request's ``Exchange`` (its clock and id); write its access line at the end."""
    exchange = request[EXCHANGE] = Exchange(_request_id(request), time.perf_counter())
    status, size = 499, 0  # 499: the client went away before an answer was complete
    try:
        response = await handler(request)
        if not response.prepared:
            # A whole answer leaves now, not after this line and the metrics are written:
            # they are not part of the client's wait. (aiohttp then finds it sent.)
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:
                return response  # 499; aiohttp sees the client gone when it tries again
        status, size = response.status, _size(response)
        return response
    finally:
        now = time.perf_counter()
        seconds = now - exchange.arrived
        if request.path.startswith("/v1/"):
            request.app[METRICS].observe_request(status, exchange.fields, seconds)
        if access_log.isEnabledFor(INFO):
            fields: dict[str, Any] = {
                "method": request.method,
                "path": request.rel_url.raw_path,  # still percent-encoded: no line breaks
                "status": status,
                "model": None,
                "stream": None,
                "duration_ms": round(seconds * 1000, 2),
                "bytes_out": size,
            }
            fields.update(exchange.fields, request_id=exchange.request_id)
            fields.update(overhead_fields(exchange, now))
            write_access_line(fields)
