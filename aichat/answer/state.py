"""Typed keys for what the application holds for its whole life."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from aichat.answer.failover import RetryPolicy
from aichat.answer.routing import Router
from aichat.core.config import Settings

SETTINGS = web.AppKey("settings", Settings)
SESSION = web.AppKey("session", aiohttp.ClientSession)
RETRY_POLICY = web.AppKey("retry_policy", RetryPolicy)
ROUTER = web.AppKey("router", Router)
