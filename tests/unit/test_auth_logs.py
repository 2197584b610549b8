"""Key checks and log formatting."""

from __future__ import annotations

import json
import logging

from aichat.auth import KeyPolicy, KeyRing, _digest
from aichat.logs import JsonFormatter, TextFormatter


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
