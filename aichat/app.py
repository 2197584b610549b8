"""Build the aiohttp application: routes, middlewares, CORS and the upstream session."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import aiohttp_cors
from aiohttp import web

from aichat.auth import KeyChecker, auth_middleware
from aichat.chat import UPSTREAM_HEADER, chat_completions
from aichat.config import Settings
from aichat.errors import error_middleware
from aichat.failover import RetryPolicy
from aichat.logs import REQUEST_ID_HEADER, access_log_middleware, add_request_id_header
from aichat.meta import get_model, health, list_models, ready
from aichat.providers import build_provider
from aichat.routing import Router, Target
from aichat.state import LIFECYCLE, RETRY_POLICY, ROUTER, SESSION, SETTINGS, Lifecycle

log = logging.getLogger("aichat")


def build_router(settings: Settings, session: aiohttp.ClientSession) -> Router:
    """Every configured model bound to its own provider instance on the shared session."""
    return Router(
        Target(
            route.name,
            build_provider(route, settings, session),
            route.target_model,
            route.fallbacks,
        )
        for route in settings.model_routes
    )


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    """The single upstream ``ClientSession``: opened with the app, closed after it drains."""
    settings = app[SETTINGS]
    connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(
        total=None, connect=settings.connect_timeout, sock_connect=settings.connect_timeout
    )
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=True
    ) as session:
        app[SESSION] = session
        app[ROUTER] = build_router(settings, session)
        app[LIFECYCLE].ready = True
        yield
        app[LIFECYCLE].ready = False


async def _stop_taking_requests(app: web.Application) -> None:
    app[LIFECYCLE].ready = False


def _setup_cors(app: web.Application, origins: tuple[str, ...]) -> None:
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        expose_headers=(REQUEST_ID_HEADER, UPSTREAM_HEADER),
        allow_headers=("Content-Type", "Authorization", REQUEST_ID_HEADER),
        allow_methods=("GET", "POST", "OPTIONS"),
        max_age=600,
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(origins, options))
    for route in list(app.router.routes()):
        cors.add(route)


def create_app(settings: Settings) -> web.Application:
    """The gateway application for ``settings``; serve it with ``aichat.server``."""
    settings.require_auth_decision()
    checker = KeyChecker(key.get_secret_value() for key in settings.api_keys)
    if not checker.enabled:
        log.warning("running WITHOUT authentication: anyone who can reach this port can use it")
    app = web.Application(
        middlewares=[access_log_middleware, error_middleware, auth_middleware(checker)],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[RETRY_POLICY] = RetryPolicy(
        settings.retries, settings.retry_backoff, settings.retry_max_wait
    )
    app[LIFECYCLE] = Lifecycle(started_at=int(time.time()))
    app.cleanup_ctx.append(_upstream_session)
    app.on_shutdown.append(_stop_taking_requests)
    app.on_response_prepare.append(add_request_id_header)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    _setup_cors(app, settings.cors_origins)
    return app
