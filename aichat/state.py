"""Typed keys for what the application holds for its whole life."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from aichat.config import Settings
from aichat.failover import RetryPolicy
from aichat.routing import Router


@dataclass(slots=True)
class Lifecycle:
    """Whether the gateway takes new requests (false while starting and while draining)."""

    ready: bool = False
    started_at: int = 0


SETTINGS = web.AppKey("settings", Settings)
SESSION = web.AppKey("session", aiohttp.ClientSession)
RETRY_POLICY = web.AppKey("retry_policy", RetryPolicy)
ROUTER = web.AppKey("router", Router)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
