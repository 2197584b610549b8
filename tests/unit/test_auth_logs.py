"""Key checks and log formatting."""

from __future__ import annotations

import json
import logging

from aichat.auth import KeyChecker
from aichat.logs import JsonFormatter, TextFormatter


def test_key_checker() -> None:
    checker = KeyChecker(["sk-a", "sk-b"])
    assert checker.enabled
    assert checker.accepts("sk-a")
    assert checker.accepts("sk-b")
    assert not checker.accepts("sk-c")
    assert not checker.accepts("")
    assert not checker.accepts(None)
    assert not checker.accepts("sk-a ")
    assert not checker.accepts("\udcff")  # lone surrogates from odd headers do not crash
    assert not KeyChecker([]).enabled


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
