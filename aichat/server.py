"""Running the application on a socket, with the options every entry point must share."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable

from aiohttp import web

from aichat.answer.reload import reload_on_sighup
from aichat.answer.state import SETTINGS
from aichat.app import create_app
from aichat.core.config import Settings, StartupError
from aichat.operations import hangup, sdnotify
from aichat.operations.connections import (
    GatewayRunner,
    client_connection_limits,
    raise_descriptor_limit,
)
from aichat.operations.lifecycle import LIFECYCLE

log = logging.getLogger("aichat")

_YOUNG_GC_THRESHOLD = 20_000  # allocations between scans of the youngest generation


def runner(app: web.Application, shutdown_timeout: float = 30.0) -> web.AppRunner:
    """An ``AppRunner`` for the gateway.

    ``handler_cancellation`` cancels a handler as soon as its client disconnects, which is
    what cancels the upstream request of an abandoned stream at once. aiohttp's own access
    log is off: ``aichat.operations.logs`` writes one richer line per request. Request bodies are
    never inflated (``auto_decompress``): a compressed one is refused before it is read,
    since a small one can inflate to gigabytes at the cost of the event loop's time.
    """
    settings = app[SETTINGS]
    # Descriptors besides the clients': an upstream socket per request in flight, Redis.
    reserved = settings.max_concurrent + (
        settings.redis_max_connections if settings.redis_url else 0
    )
    return GatewayRunner(
        app,
        header_timeout=settings.header_timeout,
        connection_limits=client_connection_limits(reserved),
        keepalive_timeout=settings.keepalive_timeout,
        auto_decompress=False,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
    )


async def serve_until_stopped(
    settings: Settings,
    load: Callable[[], Settings] | None = None,
    link: socket.socket | None = None,
) -> None:
    """Listen until SIGINT/SIGTERM, then drain in-flight requests and close everything.

    With ``load`` (how ``settings`` were made), SIGHUP reloads the configuration; one that
    came while SIGHUP was held (``aichat.operations.hangup``) reloads once the handler is in.
    ``link`` joins a worker to its supervisor (``aichat.workers``).
    """
    descriptors = raise_descriptor_limit()
    app = create_app(settings, link)
    app_runner = runner(app)
    await app_runner.setup()
    try:
        # Workers (aichat.workers) share the port: the kernel spreads connections over them.
        site = web.TCPSite(
            app_runner,
            settings.host,
            settings.port,
            reuse_address=True,
            reuse_port=settings.workers > 1,
        )
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(listen_error(settings.host, settings.port, exc)) from None
        # The PID to signal for a reload: with workers, the supervisor's, which passes it on.
        pids = f"pid {os.getpid()}"
        if settings.workers > 1:
            pids += f", supervisor pid {os.getppid()}"
        log.info(
            "aichat %s on http://%s:%d (%s, %d descriptors)",
            "listening" if settings.workers == 1 else "worker listening",
            settings.host,
            settings.port,
            pids,
            descriptors,
        )
        # What exists now (the tokenizer's tables above all) lives as long as the process:
        # keep it out of the cyclic GC, whose full passes would walk all of it every time.
        gc.freeze()
        # A request leaves no reference cycles behind, yet every 700 allocations (a few
        # requests) the youngest generation was scanned, requests in flight included: about
        # a twentieth of a short request's CPU. Scanned 30 times less often, it holds at
        # most a few MB of cyclic garbage (error paths) in between.
        gc.set_threshold(_YOUNG_GC_THRESHOLD)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if load is not None:
            reload_on_sighup(app, load)
            hangup.release()  # a SIGHUP held since start-up reloads now
        # Ready only once a stop request is handled gracefully, not by the default action.
        sdnotify.notify("READY=1")
        await stop.wait()
        log.info("shutting down")
        sdnotify.notify("STOPPING=1")
        await app[LIFECYCLE].drain(settings.drain_timeout)
    finally:
        await app_runner.cleanup()


# Why a socket could not be opened, and what to do about it, by errno.
_LISTEN_ADVICE = {
    errno.EADDRINUSE: (
        "the port is in use by another process",
        "stop it, or pick another port with --port / AICHAT_PORT",
    ),
    errno.EACCES: (
        "permission denied",
        "ports below 1024 need root or CAP_NET_BIND_SERVICE: pick a port from 1024 up "
        "with --port / AICHAT_PORT",
    ),
    errno.EADDRNOTAVAIL: (
        "the address is not one of this machine's",
        "use 0.0.0.0 (every interface) or 127.0.0.1 with --host / AICHAT_HOST",
    ),
}


def listen_error(host: str, port: int, exc: OSError) -> str:
    """One line saying why ``host:port`` could not be listened on, and the fix."""
    if isinstance(exc, socket.gaierror):
        cause, fix = "unknown host name", "set --host / AICHAT_HOST to an address of this machine"
    else:
        cause, fix = _LISTEN_ADVICE.get(exc.errno or 0, (exc.strerror or str(exc), ""))
        fix = fix or "check --host / AICHAT_HOST and --port / AICHAT_PORT"
    return f"cannot listen on {host}:{port}: {cause}; {fix}"


def serve(
    settings: Settings,
    load: Callable[[], Settings] | None = None,
    link: socket.socket | None = None,
) -> None:
    """Run the gateway in the foreground (blocking); SIGHUP reloads through ``load``;
    ``link`` joins a worker to its supervisor."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_until_stopped(settings, load, link))
    else:
        # libuv's event loop: less CPU per request than asyncio's own.
        uvloop.run(serve_until_stopped(settings, load, link))
