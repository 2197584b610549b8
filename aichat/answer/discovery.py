"""Discovered models: an ``openai`` route with ``models = "discover"`` serves what is listed.

Decisions:

- The upstream's ``GET /models`` is read at start, on every reload and every ``REFRESH``
  seconds (``RETRY_UNLISTED`` while one was never listed); each listed id is served as
  ``prefix`` + id and sent upstream as the id.
- An upstream that cannot be listed (down, an error status, not OpenAI's list shape) keeps
  the last list it gave, and a warning says why: a listing outage must not take models away.
- Explicit ``[[models]]`` always win: a discovered name that is also configured is skipped.
- Every model of one discovery route shares the route's provider and circuit: they are one
  upstream server, which fails as a whole. Both carry over while the route is unchanged.
- Listings are bounded: ``MAX_BYTES`` of JSON (read to the end, however many network reads
  that takes), ``MAX_MODELS`` ids, ``LIST_TIMEOUT`` seconds.
- A listed id becomes a model name in headers, logs and ``/v1/models``: one that is empty,
  longer than 256 characters or holds a control character is skipped.
- Redirects are followed only where the route's ``follow_redirects`` allows them, as for
  its answers: a listing must not lead the gateway, and the route's key, to another host.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypeGuard

import aiohttp
import orjson
from aiohttp import web

from aichat.answer.capabilities import capabilities_for
from aichat.answer.routing import Target
from aichat.core.config import ModelConfig, Settings
from aichat.operations.breaker import CircuitBreaker
from aichat.operations.pricing import pricing_for
from aichat.providers.base import Provider
from aichat.providers.registry import build_provider

log = logging.getLogger("aichat.discovery")

REFRESH = 300.0  # seconds between listings
RETRY_UNLISTED = 30.0  # seconds, while some upstream has never been listed
LIST_TIMEOUT = 10.0
MAX_BYTES = 1024 * 1024
MAX_MODELS = 1000


class ListingFailed(Exception):
    """The upstream's model list could not be read; the message says why."""


def listed_ids(body: bytes) -> tuple[str, ...]:
    """The usable model ids of a ``GET /models`` answer, in order, each once."""
    try:
        listing = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ListingFailed("the answer is not JSON") from None
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        raise ListingFailed("the answer has no 'data' list")
    ids = [item.get("id") for item in data if isinstance(item, dict)]
    found = tuple(dict.fromkeys(i for i in ids if _usable(i)))
    return found[:MAX_MODELS]


def _usable(model: object) -> TypeGuard[str]:
    return isinstance(model, str) and 0 < len(model) <= 256 and model.isprintable()


async def _body(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, however many reads it takes; ``ListingFailed`` past ``MAX_BYTES``."""
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > MAX_BYTES:
            raise ListingFailed(f"the list is larger than {MAX_BYTES} bytes")
    return bytes(body)


async def list_models(session: aiohttp.ClientSession, route: ModelConfig) -> tuple[str, ...]:
    """The model ids ``route``'s upstream lists at ``{base_url}/models``."""
    headers = (
        {"Authorization": f"Bearer {route.api_key.get_secret_value()}"} if route.api_key else {}
    )
    try:
        async with (
            asyncio.timeout(LIST_TIMEOUT),
            session.get(
                f"{route.base_url}/models",
                headers=headers,
                allow_redirects=route.follow_redirects,
            ) as response,
        ):
            if response.status != 200:
                redirect = " (a redirect: see follow_redirects)" if response.status < 400 else ""
                raise ListingFailed(f"HTTP {response.status}{redirect}")
            body = await _body(response)
    except (aiohttp.ClientError, OSError) as exc:
        raise ListingFailed(type(exc).__name__) from None
    except TimeoutError:
        raise ListingFailed(f"no answer within {LIST_TIMEOUT:.0f} s") from None
    return listed_ids(body)


class Discovery:
    """The last model list of each discovery route, and the targets that serve them."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._found: dict[str, tuple[str, ...]] = {}  # route name -> ids last listed
        self._upstreams: dict[str, tuple[ModelConfig, Provider, CircuitBreaker]] = {}
        self.names: set[str] = set()  # the names served by discovery now

    async def refresh(self, settings: Settings) -> None:
        """List every discovery route's upstream; one that fails keeps its last list."""
        routes = [route for route in settings.model_routes if route.discovers]
        results = await asyncio.gather(
            *(list_models(self._session, route) for route in routes), return_exceptions=True
        )
        for route, result in zip(routes, results, strict=True):
            if isinstance(result, ListingFailed):
                kept = len(self._found.get(route.name, ()))
                log.warning(
                    "cannot list models of %s (%s): keeping the last %d",
                    route.name,
                    result,
                    kept,
                )
            elif isinstance(result, BaseException):
                raise result
            else:
                self._found[route.name] = result

    def complete(self, settings: Settings) -> bool:
        """Whether every discovery route has been listed at least once."""
        return all(route.name in self._found for route in settings.model_routes if route.discovers)

    def _upstream(
        self, route: ModelConfig, settings: Settings
    ) -> tuple[ModelConfig, Provider, CircuitBreaker]:
        known = self._upstreams.get(route.name)
        if known is not None and known[0] == route:
            return known
        built = (
            route,
            build_provider(route, settings, self._session),
            CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown),
        )
        self._upstreams[route.name] = built
        return built

    def targets(self, settings: Settings, explicit: list[Target]) -> list[Target]:
        """``explicit`` followed by every discovered model whose name none of them has."""
        taken = {target.name for target in explicit}
        targets = list(explicit)
        names: set[str] = set()
        for route in settings.model_routes:
            if not route.discovers:
                continue
            _, provider, breaker = self._upstream(route, settings)
            capabilities = capabilities_for(route)
            for model in self._found.get(route.name, ()):
                name = route.prefix + model
                if name in taken:
                    continue
                taken.add(name)
                names.add(name)
                pricing = pricing_for(route, model)
                targets.append(
                    Target(
                        name,
                        provider,
                        model,
                        route.fallbacks,
                        breaker,
                        capabilities,
                        pricing,
                        listed_by=route.name,
                        max_tokens=route.max_tokens,
                    )
                )
        self.names = names
        return targets


DISCOVERY = web.AppKey("discovery", Discovery)
