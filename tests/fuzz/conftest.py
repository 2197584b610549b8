"""Fixtures the hostile tests share."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def no_aichat_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The gateway's own code logs no error (no traceback) during the test."""
    with caplog.at_level(logging.WARNING):
        yield
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("aichat")
    ]
    assert not errors, [r.getMessage() for r in errors]
