"""Reload without a restart: SIGHUP re-reads the env file and the config file and swaps them in.

Decisions:

- The new configuration is loaded and checked completely (settings, keys, every route's
  provider) before anything changes; one that fails is refused with one log line naming the
  file, table and key, and the running one stays.
- The swap is a few attribute assignments with no await between them, so no request sees
  half of each. A request in flight keeps what it already holds (its key's policy, its chain
  of upstreams) and finishes on the configuration it started with.
- What reloads: models and their providers, fallbacks, keys with their limits, models and
  budgets. A route whose table and upstream settings are unchanged keeps its provider and its
  circuit; counters live by key name, so an unchanged key keeps its rate, concurrency and
  token counts. Settings of the process itself (listen address, Redis, timeouts of the
  shared session, logging, ...) need a restart: a reload that changes them says so.
- The files are read, checked and hashed (each read once) off the event loop (a large file,
  a slow disk or a key file on a network mount never stall requests), and applied only once
  what they yield has stopped changing: read, ``SETTLE`` seconds later read again, until two
  reads in a row agree (``SETTLE_ROUNDS`` at most, then refused). A file written in two
  steps (an editor's save, a ``cat >`` that arrives in pieces, an env file then a config
  file) is never applied half written. Writing a new file and renaming it over the old one
  (atomic replacement) is still the way to write it, as the README says: a reader then sees
  one version or the other.
- Signals are coalesced: one reload at a time, and at most one more queued behind it, however
  many SIGHUPs arrive meanwhile (the queued one reads the files as they are when it starts,
  so it sees every change the others would have).
- Discovered models (``aichat.answer.discovery``) are listed again on every reload, before the swap,
  and every ``REFRESH`` seconds, under the same lock. The refresher runs whatever the
  configuration at start: a discovery route a reload adds is refreshed on the same schedule
  (the reload restarts it) as one that was there from the start.
- The loaded configuration's hash (secrets hashed first, never shown) is on ``/ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import SecretStr

from aichat.answer.capabilities import capabilities_for
from aichat.answer.discovery import DISCOVERY, Discovery
from aichat.answer.routing import Target
from aichat.answer.state import ROUTER, SESSION
from aichat.answer.usage import LEDGER
from aichat.core.config import ConfigError, ModelConfig, Settings
from aichat.core.tokens import load_tokenizer
from aichat.operations.auth import KeyRing
from aichat.operations.breaker import CircuitBreaker
from aichat.operations.budgets import key_budgets
from aichat.operations.pricing import pricing_for
from aichat.providers.registry import build_provider

log = logging.getLogger("aichat.reload")

SETTLE = 0.25  # seconds between two reads of the files that must agree before a reload applies
SETTLE_ROUNDS = 20  # reads at most: a file rewritten for longer than that is refused

# What a route's provider and circuit are built from, besides its own table.
_UPSTREAM_FIELDS = (
    "aichats_base_url",
    "aichats_history",
    "first_byte_timeout",
    "idle_timeout",
    "total_timeout",
    "max_line_bytes",
    "max_answer_bytes",
    "breaker_failures",
    "breaker_cooldown",
)
# What a reload applies; any other change waits for a restart.
_RELOADED = frozenset(
    (
        *("models", "config_file", "routes", "keys", "api_keys", "allow_no_auth"),
        *("rate_limit_rpm", "max_concurrent_per_key", *_UPSTREAM_FIELDS),
    )
)


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "sha256:" + hashlib.sha256(value.get_secret_value().encode()).hexdigest()
    return str(value)


def config_hash(settings: Settings) -> str:
    """A short fingerprint of everything configured (secrets included, through their hash)."""
    dumped = json.dumps(settings.model_dump(), sort_keys=True, default=_plain)
    return hashlib.sha256(dumped.encode()).hexdigest()[:16]


def build_target(route: ModelConfig, settings: Settings, session: aiohttp.ClientSession) -> Target:
    """The routing target serving ``route``: its provider on the shared session and a circuit."""
    return Target(
        route.name,
        build_provider(route, settings, session),
        route.target_model,
        route.fallbacks,
        CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown, name=route.name),
        capabilities_for(route),
        pricing_for(route, route.target_model),
        route.context_window,
        max_tokens=route.max_tokens,
        context_fallbacks=route.context_fallbacks,
    )


def _upstream_settings(settings: Settings) -> tuple[Any, ...]:
    return tuple(getattr(settings, name) for name in _UPSTREAM_FIELDS)


class LiveConfig:
    """The configuration being served, its hash, and the count of reloads."""

    def __init__(self, settings: Settings, keys: KeyRing, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.keys = keys  # the ring the auth middleware reads: replaced in place on reload
        self.hash = config_hash(settings)
        self.lock = asyncio.Lock()
        self.reloads = Counter(
            "aichat_config_reloads",
            "Configuration reloads (SIGHUP), by result: success or refused.",
            ["result"],
            registry=registry,
        )
        for result in ("success", "refused"):
            self.reloads.labels(result)  # both series from the start, at 0


LIVE = web.AppKey("live_config", LiveConfig)


def _targets(app: web.Application, old: Settings, new: Settings) -> list[Target]:
    """The new configuration's explicit targets, reusing those whose route did not change."""
    session = app[SESSION]
    running = {target.name: target for target in app[ROUTER].targets}
    before = {route.name: route for route in old.model_routes}
    same_upstreams = _upstream_settings(old) == _upstream_settings(new)
    targets = []
    for route in new.model_routes:
        if route.discovers:
            continue
        kept = running.get(route.name)
        if kept is not None and same_upstreams and before.get(route.name) == route:
            targets.append(kept)
        else:
            targets.append(build_target(route, new, session))
    return targets


class _Checked(NamedTuple):
    """A configuration read and checked: its settings, their keys and its hash."""

    settings: Settings
    keys: KeyRing
    hash: str


def _checked(load: Callable[[], Settings]) -> _Checked | str:
    """What ``load`` yields, checked and hashed (once, here, off the event loop), or why it
    is refused."""
    try:
        settings = load()
        settings.require_auth_decision()
        return _Checked(settings, KeyRing.from_settings(settings), config_hash(settings))
    except (ConfigError, ValueError, OSError) as exc:
        return str(exc)


async def _settled(load: Callable[[], Settings]) -> _Checked:
    """The checked configuration once two reads ``SETTLE`` seconds apart agree (off the loop).

    Raises ``ConfigError`` with the reason when they agree on a refusal.
    """
    last = await asyncio.to_thread(_checked, load)
    for _ in range(SETTLE_ROUNDS - 1):
        await asyncio.sleep(SETTLE)
        now = await asyncio.to_thread(_checked, load)
        if _outcome(now) == _outcome(last):
            if isinstance(now, str):
                raise ConfigError(now)
            return now
        last = now
    raise ConfigError(f"the files kept changing for {SETTLE * SETTLE_ROUNDS:.0f} s")


def _outcome(checked: _Checked | str) -> str:
    return checked if isinstance(checked, str) else checked.hash


async def reload_config(app: web.Application, load: Callable[[], Settings]) -> bool:
    """Load, check and swap in the configuration ``load`` returns; False if it was refused."""
    live = app[LIVE]
    async with live.lock:
        try:
            settings, keys, settled_hash = await _settled(load)
            targets = _targets(app, live.settings, settings)
        except (ConfigError, ValueError, OSError) as exc:
            # One line, whatever the file holds: a name with a line break cannot forge another.
            why = str(exc).replace("\r", "\\r").replace("\n", "\\n")
            log.error("configuration reload refused, still serving %s: %s", live.hash, why)
            live.reloads.labels("refused").inc()
            return False
        if any(route.provider != "openai" for route in settings.model_routes):
            await asyncio.to_thread(load_tokenizer)  # a second of CPU, off the event loop
        await app[DISCOVERY].refresh(settings)
        targets = app[DISCOVERY].targets(settings, targets)
        restart = sorted(
            name
            for name in Settings.model_fields
            if name not in _RELOADED and getattr(settings, name) != getattr(live.settings, name)
        )
        # The swap: no await from here on.
        app[ROUTER].replace(targets)
        live.keys.replace(keys)
        app[LEDGER].budgets.by_key = key_budgets(settings)
        live.settings, previous = settings, live.hash
        live.hash = settled_hash
        app[DISCOVERY].reschedule()  # listed just now: the next listing counts from here
    live.reloads.labels("success").inc()
    log.info(
        "configuration reloaded",
        extra={
            "fields": {
                "config": live.hash,
                "previous": previous,
                "models": len(targets),
                "keys": len(keys),
            }
        },
    )
    if restart:
        log.warning("changed settings take effect on restart only: %s", ", ".join(restart))
    return True


class Reloads:
    """Reloads asked for by signals: one at a time, at most one more queued behind it."""

    def __init__(self, app: web.Application, load: Callable[[], Settings]) -> None:
        self._app, self._load = app, load
        self._running: asyncio.Task[None] | None = None  # held: the loop keeps weak references
        self._queued = False

    def ask(self) -> None:
        """One more reload: started now, or after the one running (once, however many ask)."""
        if self._running is not None and not self._running.done():
            self._queued = True
            return
        self._running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await reload_config(self._app, self._load)
            if not self._queued:
                return
            self._queued = False


def reload_on_sighup(app: web.Application, load: Callable[[], Settings]) -> None:
    """Reload the configuration whenever the process gets SIGHUP, coalesced (``Reloads``)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, Reloads(app, load).ask)


async def _refresh_discovered(app: web.Application) -> None:
    live, discovery, router = app[LIVE], app[DISCOVERY], app[ROUTER]
    while True:
        if not await discovery.due(live.settings):
            continue  # a reload: the schedule starts over with its configuration
        async with live.lock:  # never between a reload's listing and its swap
            try:
                await discovery.refresh(live.settings)
            except Exception:
                log.exception("listing discovered models failed")  # and again next time
                continue
            explicit = [target for target in router.targets if target.name not in discovery.names]
            router.replace(discovery.targets(live.settings, explicit))


async def discovered_models(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: discovered models listed at start, then on schedule (``Discovery.due``).

    The refresher runs even when no route discovers yet: a reload may add one.
    """
    discovery = app[DISCOVERY] = Discovery(app[SESSION])
    settings = app[LIVE].settings
    if any(route.discovers for route in settings.model_routes):
        await discovery.refresh(settings)
        app[ROUTER].replace(discovery.targets(settings, app[ROUTER].targets))
    refresher = asyncio.create_task(_refresh_discovered(app))
    yield
    refresher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await refresher
