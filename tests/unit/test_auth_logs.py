"""Key checks and log formatting."""

from __future__ import annotations

import hmac
import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from aiohttp.http_exceptions import BadHttpMessage
from hypothesis import given
from hypothesis import strategies as st

from aichat.core.exchange import KeyPolicy
from aichat.operations.auth import KeyRing, _digest, key_matches
from aichat.operations.logs import (
    JsonFormatter,
    LogHandler,
    TextFormatter,
    _fields,
    access_log,
    escape,
    quiet_malformed_requests,
    write_access_line,
)


def test_key_ring_finds_each_key_and_nothing_else() -> None:
    a, b = KeyPolicy("a"), KeyPolicy("b", requests_per_minute=5)
    ring = KeyRing([(_digest("sk-a"), a), (_digest("sk-b"), b)])
    assert ring.enabled
    assert ring.lookup("sk-a") is a
    assert ring.lookup("sk-b") is b
    for wrong in ("sk-c", "", None, "sk-a ", "\udcff"):  # odd headers must not crash
        assert ring.lookup(wrong) is None
    assert not KeyRing([]).enabled


def test_key_policy_models() -> None:
    assert KeyPolicy("x").allows("anything")
    limited = KeyPolicy("x", models=frozenset({"gpt-4o"}))
    assert limited.allows("gpt-4o")
    assert not limited.allows("other")


def _record() -> logging.LogRecord:
    record = logging.LogRecord("aichat.access", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"status": 200, "path": "/v1/models"}
    return record


def test_json_log_lines() -> None:
    line = json.loads(JsonFormatter().format(_record()))
    assert line["message"] == "request"
    assert line["status"] == 200
    assert line["level"] == "INFO"


def test_text_log_lines() -> None:
    assert TextFormatter().format(_record()).endswith("request status=200 path=/v1/models")


def test_log_times_match_loggings_own_across_seconds_and_formats() -> None:
    # Times are formatted once per second and reused: each record still gets its own.
    ours, reference = TextFormatter(), logging.Formatter()
    json_lines = JsonFormatter()
    for created in (1_800_000_000.001, 1_800_000_000.999, 1_800_000_001.5, 1_800_000_000.25):
        record = _record()
        record.created, record.msecs = created, (created % 1) * 1000
        assert ours.formatTime(record) == reference.formatTime(record)
        stamp = json.loads(json_lines.format(record))["time"]
        assert stamp == reference.formatTime(record, "%Y-%m-%dT%H:%M:%S")


def test_malformed_requests_are_one_info_line_not_an_error() -> None:
    try:
        raise BadHttpMessage("Invalid header value char")
    except BadHttpMessage:
        record = logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            ("127.0.0.1",),
            sys.exc_info(),
        )
    assert quiet_malformed_requests(record)
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    assert record.getMessage() == "malformed HTTP request: BadHttpMessage"
    assert "Traceback" not in TextFormatter().format(record)


def test_other_errors_keep_their_level_and_traceback() -> None:
    try:
        raise RuntimeError("a real bug")
    except RuntimeError:
        record = logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Unhandled exception",
            None,
            sys.exc_info(),
        )
    assert quiet_malformed_requests(record)
    assert record.levelno == logging.ERROR
    assert "Traceback" in TextFormatter().format(record)


def test_text_logs_escape_what_clients_and_upstreams_choose() -> None:
    record = logging.LogRecord(
        "aichat.access", logging.INFO, __file__, 1, "unknown %s", ("a\nb\u2028c\u202ed",), None
    )
    forged = "gpt-4o\r\n2026-01-01 00:00:00,000 INFO aichat.access request key=key-2"
    record.fields = {"model": forged, "error": "\x1b[2Jgone", "key": "key-1", "note": 'a "b"'}
    line = TextFormatter().format(record)
    assert line.splitlines() == [line]  # \r, \n, \u2028 and friends would each split it
    assert "\x1b" not in line
    assert "\u202e" not in line
    assert line.endswith(
        "unknown a\\nb\\u2028c\\u202ed"
        ' model="gpt-4o\\r\\n2026-01-01 00:00:00,000 INFO aichat.access request key=key-2"'
        ' error=\\x1b[2Jgone key=key-1 note="a \\"b\\""'
    )


def test_a_lone_backslash_cannot_pass_for_an_escape() -> None:
    record = _record()
    record.fields = {"model": "a\\nb"}
    assert TextFormatter().format(record).endswith("model=a\\\\nb")


@given(st.text())
def test_values_are_escaped_then_quoted_whatever_path_they_take(value: str) -> None:
    # The short cuts (a value written as it is, escaping skipped) must agree with the rule.
    escaped = escape(value)
    plain = escaped and not any(c.isspace() or c in '="' for c in escaped)
    expected = escaped if plain else '"' + escaped.replace('"', '\\"') + '"'
    assert _fields({"k": value}) == f"k={expected}"


def test_key_matches_compares_equal_length_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    lengths: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        lengths.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert key_matches("metrics-key", "metrics-key")
    for wrong in (None, "", "m", "metrics-key-but-longer", "\udcff", "x" * 10_000):
        assert not key_matches(wrong, "metrics-key")
    assert set(lengths) == {(32, 32)}


@contextmanager
def _only_handler(stream: io.StringIO) -> Iterator[None]:
    """aichat's own handler alone on the root logger, as ``aichat serve`` configures it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = [LogHandler(stream, TextFormatter())]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_access_lines_written_directly_read_as_through_logging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fields = {"method": "POST", "status": 200, "model": "a b\nc", "stream": None, "ms": 1.5}
    stream = io.StringIO()
    with monkeypatch.context() as patched, _only_handler(stream):
        patched.setattr(access_log, "handle", None)  # the direct path makes no record
        write_access_line(fields)
    direct = stream.getvalue()
    record = access_log.makeRecord(access_log.name, logging.INFO, "", 0, "request", (), None)
    record.fields = fields
    expected = TextFormatter().format(record)
    assert direct.endswith("\n") and direct.count("\n") == 1
    # Identical but for the time, which differs by the moments each was made.
    assert direct.rstrip("\n").split(" ", 2)[2] == expected.split(" ", 2)[2]
    assert direct.split(" ", 2)[2].startswith("INFO aichat.access request method=POST")


def test_access_lines_reach_any_other_handler_as_records() -> None:
    stream, seen = io.StringIO(), []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    with _only_handler(stream):
        access_log.addFilter(keep)
        try:
            write_access_line({"status": 201})
        finally:
            access_log.removeFilter(keep)
    assert [record.fields for record in seen] == [{"status": 201}]  # type: ignore[attr-defined]
    assert stream.getvalue().count("status=201") == 1
