"""Running the application on a socket, with the options every entry point must share."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from aichat import sdnotify
from aichat.app import create_app
from aichat.config import Settings
from aichat.lifecycle import LIFECYCLE
from aichat.reload import reload_on_sighup

log = logging.getLogger("aichat")


def runner(app: web.Application, shutdown_timeout: float = 30.0) -> web.AppRunner:
    """An ``AppRunner`` for the gateway.

    ``handler_cancellation`` cancels a handler as soon as its client disconnects, which is
    what cancels the upstream request of an abandoned stream at once. aiohttp's own access
    log is off: ``aichat.logs`` writes one richer line per request.
    """
    return web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout
    )


async def serve_until_stopped(
    settings: Settings, load: Callable[[], Settings] | None = None
) -> None:
    """Listen until SIGINT/SIGTERM, then drain in-flight requests and close everything.

    With ``load`` (how ``settings`` were made), SIGHUP reloads the configuration.
    """
    app = create_app(settings)
    app_runner = runner(app)
    await app_runner.setup()
    try:
        site = web.TCPSite(app_runner, settings.host, settings.port, reuse_address=True)
        await site.start()
        log.info("aichat listening on http://%s:%d", settings.host, settings.port)
        # What exists now (the tokenizer's tables above all) lives as long as the process:
        # keep it out of the cyclic GC, whose full passes would walk all of it every time.
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if load is not None:
            reload_on_sighup(app, load)
        # Ready only once a stop request is handled gracefully, not by the default action.
        sdnotify.notify("READY=1")
        await stop.wait()
        log.info("shutting down")
        sdnotify.notify("STOPPING=1")
        await app[LIFECYCLE].drain(settings.drain_timeout)
    finally:
        await app_runner.cleanup()


def serve(settings: Settings, load: Callable[[], Settings] | None = None) -> None:
    """Run the gateway in the foreground (blocking); SIGHUP reloads through ``load``."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_until_stopped(settings, load))
    else:
        # libuv's event loop: less CPU per request than asyncio's own.
        uvloop.run(serve_until_stopped(settings, load))
