"""Build the aiohttp application: routes, middlewares, CORS and the upstream session."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import aiohttp_cors
from aiohttp import hdrs, web

from aichat.answer.answering import UPSTREAM_HEADER
from aichat.answer.capabilities import DROPPED_HEADER
from aichat.answer.failover import RetryPolicy
from aichat.answer.reload import LIVE, LiveConfig, build_target, discovered_models
from aichat.answer.routing import Router
from aichat.answer.state import RETRY_POLICY, ROUTER, SESSION, SETTINGS
from aichat.answer.usage import usage_ledger
from aichat.core.config import Settings
from aichat.core.errors import ERROR_RENDERERS, ErrorRenderer, error_middleware
from aichat.core.exchange import EXCHANGE
from aichat.core.tokens import load_tokenizer
from aichat.inbound.anthropic_api import (
    COUNT_TOKENS_PATH,
    MESSAGES_PATH,
    count_message_tokens,
    create_message,
)
from aichat.inbound.anthropic_api import error_response as anthropic_error
from aichat.inbound.chat import chat_completions
from aichat.inbound.meta import get_model, health, list_models, ready
from aichat.inbound.openapi import OPENAPI, openapi_document, openapi_endpoint
from aichat.inbound.playground import add_playground
from aichat.inbound.responses_api import create_response
from aichat.inbound.usage_page import add_usage_page
from aichat.operations.auth import FAILED_KEYS, FailedKeys, KeyRing, auth_middleware
from aichat.operations.breaker import CircuitBreaker
from aichat.operations.connections import SERVER_NAME
from aichat.operations.history_db import keep_history
from aichat.operations.lifecycle import LIFECYCLE, Lifecycle, drain_middleware
from aichat.operations.limits import LIMITER, Limiter, limits_middleware
from aichat.operations.link import WORKER_LINK, Link
from aichat.operations.logs import REQUEST_ID_HEADER, access_log_middleware, add_request_id_header
from aichat.operations.loop_lag import watch_loop_lag
from aichat.operations.metrics import METRICS, METRICS_KEY, Metrics, metrics_endpoint
from aichat.operations.pricing import load_price_table
from aichat.operations.redis_pool import REDIS_POOL, RedisPool
from aichat.operations.shared import counter_store, worker_handlers
from aichat.operations.timing import SERVER_TIMING_HEADER, add_server_timing
from aichat.operations.trace_setup import configured_tracing

log = logging.getLogger("aichat")


def build_router(settings: Settings, session: aiohttp.ClientSession) -> Router:
    """Every configured model bound to its own provider instance on the shared session."""
    return Router(
        build_target(route, settings, session)
        for route in settings.model_routes
        if not route.discovers  # served per listed model: ``aichat.answer.discovery``
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
        router = app[ROUTER] = build_router(settings, session)
        failed_keys = app[FAILED_KEYS]
        app[METRICS].watch(
            app[LIMITER].rejection_counts,
            router.circuits,
            lambda: failed_keys.total,
            router.metric_names,
        )
        app[LIFECYCLE].ready = True
        yield
        app[LIFECYCLE].ready = False


async def _redis_pool(app: web.Application) -> AsyncIterator[None]:
    """The process's one Redis pool, when ``REDIS_URL`` is set; closed after its users."""
    settings = app[SETTINGS]
    if settings.redis_url is None:
        yield
        return
    pool = app[REDIS_POOL] = RedisPool(
        settings.redis_url, settings.redis_max_connections, settings.queue_timeout
    )
    yield
    await pool.close()


_LINK_SOCKET = web.AppKey("link_socket", socket.socket)


async def _worker_link(app: web.Application) -> AsyncIterator[None]:
    """A worker's link to its supervisor (``aichat serve --workers``): the gateway's shared
    counters and budgets, and the other workers' metrics (``aichat.operations.shared``)."""
    sock = app.get(_LINK_SOCKET)
    if sock is None:
        yield
        return
    circuits = app[RETRY_POLICY].circuits
    handlers = {**worker_handlers(app[METRICS].registry), **circuits.handlers()}
    link = app[WORKER_LINK] = await Link.over(sock, handlers, wait=app[SETTINGS].queue_timeout)
    circuits.attach(link, lambda: _breakers(app))
    yield
    await link.close()


def _breakers(app: web.Application) -> list[CircuitBreaker]:
    """Every target's circuit breaker (none before the router exists)."""
    router = app.get(ROUTER)
    return [] if router is None else [target.breaker for target in router.targets]


async def _counter_store(app: web.Application) -> AsyncIterator[None]:
    """Rate-limit counters: in Redis when ``REDIS_URL`` is set, else the gateway's own."""
    settings = app[SETTINGS]
    limiter = app[LIMITER] = Limiter(
        counter_store(settings, app.get(REDIS_POOL), app.get(WORKER_LINK)),
        settings.max_concurrent,
        settings.queue_timeout,
        settings.redis_failure == "open",
        settings.body_timeout,
    )
    limiter.start()
    yield
    await limiter.stop()


async def _stop_taking_requests(app: web.Application) -> None:
    app[LIFECYCLE].ready = False


ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[object]]
# Operational endpoints are for probes and scrapers, not browsers: no CORS, so no web page a
# user visits can read them (what they show names routes and upstreams).
_NOT_FOR_BROWSERS = frozenset({"/metrics", "/ready", "/health"})
_CORS_HEADERS: web.AppKey[ResponseHook] = web.AppKey("cors_headers")


async def _add_gateway_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: what every response carries (one hook: they run per response)."""
    response.headers[hdrs.SERVER] = SERVER_NAME  # no library versions
    exchange = request.get(EXCHANGE)
    if exchange is not None:
        add_request_id_header(exchange, response)
        response.headers.update(exchange.headers)  # rate limits and budgets
        add_server_timing(exchange, response)
    if hdrs.ORIGIN in request.headers:  # browsers only: see _setup_cors
        await request.app[_CORS_HEADERS](request, response)


def _setup_cors(app: web.Application, origins: tuple[str, ...]) -> None:
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        expose_headers=(REQUEST_ID_HEADER, UPSTREAM_HEADER, DROPPED_HEADER, SERVER_TIMING_HEADER),
        # x-api-key and anthropic-*: what Anthropic's SDKs send from a browser.
        allow_headers=(
            "Content-Type",
            "Authorization",
            REQUEST_ID_HEADER,
            "x-api-key",
            "anthropic-version",
            "anthropic-beta",
            "anthropic-dangerous-direct-browser-access",
        ),
        allow_methods=("GET", "POST", "OPTIONS"),
        max_age=600,
    )
    hooks = len(app.on_response_prepare)
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(origins, options))
    for route in list(app.router.routes()):
        if route.resource is None or route.resource.canonical not in _NOT_FOR_BROWSERS:
            cors.add(route)
    # aiohttp-cors looks up the route's CORS settings for every response, though it only
    # acts on requests with an Origin header, which API clients other than browsers never
    # send: its hook is taken out and run by the gateway's own, for those requests only.
    if len(app.on_response_prepare) != hooks + 1:
        raise RuntimeError("aiohttp-cors was expected to add exactly one response hook")
    cors_headers: ResponseHook = app.on_response_prepare.pop()
    app[_CORS_HEADERS] = cors_headers


def preload(settings: Settings) -> None:
    """Load what the configured routes need before their first request (once per process):
    the tokenizer, where a route counts tokens itself, and the price table, where a route is
    priced from it (about 6 MB; loaded before ``--workers`` fork, it is shared)."""
    if any(route.provider in ("aichats", "mock") for route in settings.model_routes):
        # aichats reports no usage and the mock counts exactly: both count here, from the
        # first request on. OpenAI and Anthropic upstreams report their own.
        load_tokenizer()
    if any(route.provider == "openai" and route.price is None for route in settings.model_routes):
        load_price_table()


def create_app(settings: Settings, link: socket.socket | None = None) -> web.Application:
    """The gateway application for ``settings``; serve it with ``aichat.server``.

    ``link``: a worker's end of its supervisor's socket pair (``aichat.workers``).
    """
    settings.require_auth_decision()
    preload(settings)
    keys = KeyRing.from_settings(settings)
    if not keys.enabled:
        log.warning("running WITHOUT authentication: anyone who can reach this port can use it")
    tracing = configured_tracing()
    # Outermost first: the access line sees the final status; a request's span (when traced)
    # starts with its Exchange and sees its error rendered; errors are rendered for
    # everything inside; drained requests never reach auth; limits apply per known key.
    app = web.Application(
        middlewares=[
            access_log_middleware,
            *([tracing.middleware] if tracing is not None else []),
            error_middleware,
            drain_middleware,
            auth_middleware(keys),
            limits_middleware,
        ],
        client_max_size=settings.max_body_bytes,
    )
    metrics = Metrics()
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[FAILED_KEYS] = FailedKeys()
    app[LIVE] = LiveConfig(settings, keys, metrics.registry)
    if settings.metrics_key is not None:
        app[METRICS_KEY] = settings.metrics_key.get_secret_value()
    app[RETRY_POLICY] = RetryPolicy(
        settings.retries,
        settings.retry_backoff,
        settings.retry_max_wait,
        metrics,
    )
    app[LIFECYCLE] = Lifecycle(started_at=int(time.time()))
    if link is not None:
        app[_LINK_SOCKET] = link
    # Reverse order on the way out: answers still closing record their usage first.
    app.cleanup_ctx.extend(
        [
            _redis_pool,
            _worker_link,
            _counter_store,
            keep_history(settings),
            usage_ledger,
            _upstream_session,
            discovered_models,
        ]
    )
    if tracing is not None:
        # First in, last out: spans of answers still closing are exported.
        app.cleanup_ctx.insert(0, tracing.running)
    # Last: what the others do to start (files, connections) is not lateness under load.
    watch_loop_lag(app, settings.max_loop_lag)
    app.on_shutdown.append(_stop_taking_requests)
    app.on_response_prepare.append(_add_gateway_headers)
    app[OPENAPI] = openapi_document()
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/openapi.json", openapi_endpoint)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/responses", create_response)
    app.router.add_post(MESSAGES_PATH, create_message)
    app.router.add_post(COUNT_TOKENS_PATH, count_message_tokens)
    renderers: dict[str, ErrorRenderer] = dict.fromkeys(
        (MESSAGES_PATH, COUNT_TOKENS_PATH), anthropic_error
    )
    app[ERROR_RENDERERS] = renderers
    if settings.playground:
        add_playground(app.router)
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    add_usage_page(app, admin_key)
    _setup_cors(app, settings.cors_origins)
    return app
