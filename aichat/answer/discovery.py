"""Discovered models: an ``openai`` route with ``models = "discover"`` serves what is listed.

Decisions:

- The upstream's ``GET /models`` is read at start, on every reload and every ``REFRESH``
  seconds (``RETRY_UNLISTED`` while one was never listed); each listed model is served as
  ``prefix`` + a readable name (:func:`readable_name`) and sent upstream as its id. The
  schedule follows the configuration in effect: a reload that adds or changes a discovery
  route restarts it (:meth:`Discovery.due`), and without any discovery route nothing waits
  on a timer at all.
- Names people can type: llama.cpp lists a model by the path of its file unless it was given
  an alias, so a path becomes its file name without the directory and ``.gguf``; an alias
  the upstream reports wins. A readable name that two listed models share is served as the
  id for the second, so both stay reachable.
- A model's context window comes from the route's ``context_window`` when set, else from the
  upstream where it says: llama.cpp's ``meta.n_ctx`` (one slot's share) and vLLM's
  ``max_model_len`` in the listing itself; Ollama (found by its ``/api/version``, asked only
  when the listing gives no window) through ``/api/show``: the ``num_ctx`` a model file sets,
  within the model's own ``context_length``. Ollama's default ``num_ctx`` is its server's
  setting, which it does not report: no window is better than a wrong one. Windows once read
  are kept per model id; Ollama is asked about new ids only.
- An upstream that cannot be listed (down, an error status, not OpenAI's list shape) keeps
  the last list it gave, and a warning says why: a listing outage must not take models away.
  A connection failure is named by its exception's class and message, on one line and
  bounded (the log escapes what is left).
- Explicit ``[[models]]`` always win: a discovered name that is also configured is skipped.
- Every model of one discovery route shares the route's provider and circuit: they are one
  upstream server, which fails as a whole. Both carry over while the route is unchanged.
- Listings are bounded: ``MAX_BYTES`` of JSON (read to the end, however many network reads
  that takes), ``MAX_MODELS`` ids, ``LIST_TIMEOUT`` seconds; so is each Ollama question,
  ``ASK_AT_ONCE`` at a time, and a window above ``MAX_CONTEXT_WINDOW`` tokens is not
  believed.
- A listed id or alias becomes a model name in headers, logs and ``/v1/models``: one that is
  empty, longer than 256 characters or holds a control character is not used.
- Redirects are followed only where the route's ``follow_redirects`` allows them, as for
  its answers: a listing must not lead the gateway, and the route's key, to another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

import aiohttp
import orjson
from aiohttp import web

from aichat.answer.capabilities import capabilities_for
from aichat.answer.routing import Target
from aichat.core.config import MAX_CONTEXT_WINDOW, ModelConfig, Settings
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
ASK_AT_ONCE = 4  # Ollama questions in flight per route
MAX_REASON = 300  # characters of a failure's description in the warning

# A file: absolute, home- or dot-relative, any Windows path, or a GGUF file anywhere.
_FILE_PATH = re.compile(r"^(?:/|~/|\.{1,2}/|[A-Za-z]:[\\/])|\\|\.gguf$", re.IGNORECASE)
_GGUF = re.compile(r"\.gguf$", re.IGNORECASE)
_NUM_CTX = re.compile(r"^num_ctx\s+(\d+)\s*$", re.MULTILINE)


class ListingFailed(Exception):
    """The upstream's model list could not be read; the message says why."""


@dataclass(frozen=True, slots=True)
class Listed:
    """One model an upstream lists: the id it knows, the name to serve, its window if told."""

    id: str
    name: str
    window: int | None = None


def readable_name(model_id: str, aliases: Iterable[str] = ()) -> str:
    """The name to serve an upstream model by: its id, or an alias when the id is a file path,
    or else the file's name without its directory and ``.gguf``."""
    for candidate in (model_id, *aliases):
        if not _FILE_PATH.search(candidate):
            return candidate
    stem = _GGUF.sub("", re.split(r"[\\/]", model_id)[-1])
    return stem or model_id


def _window(value: Any) -> int | None:
    """A context window as an upstream wrote it, if it is a believable number of tokens."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_CONTEXT_WINDOW:
        return value
    return None


def _listed(item: dict[str, Any]) -> Listed | None:
    model_id = item.get("id")
    if not _usable(model_id):
        return None
    aliases = item.get("aliases")
    named = [a for a in aliases if _usable(a)] if isinstance(aliases, list) else []
    meta = item.get("meta")
    window = _window(item.get("max_model_len"))  # vLLM
    if window is None and isinstance(meta, dict):
        window = _window(meta.get("n_ctx"))  # llama.cpp: one slot's share
    return Listed(model_id, readable_name(model_id, named[:8]), window)


def read_listing(body: bytes) -> tuple[Listed, ...]:
    """The models of an OpenAI-shaped list (``{"data": [{"id": ...}, ...]}``), in order."""
    try:
        listing = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ListingFailed("the answer is not JSON") from None
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        raise ListingFailed("the answer has no 'data' list")
    found: dict[str, Listed] = {}
    names: set[str] = set()
    for item in data:
        listed = _listed(item) if isinstance(item, dict) else None
        if listed is None or listed.id in found:
            continue
        if listed.name in names:  # two files of one name: the second keeps its id
            listed = Listed(listed.id, listed.id, listed.window)
        if listed.name in names:
            continue
        found[listed.id] = listed
        names.add(listed.name)
        if len(found) == MAX_MODELS:
            break
    return tuple(found.values())


def _usable(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and 0 < len(name) <= 256 and name.isprintable()


def _auth(route: ModelConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {route.api_key.get_secret_value()}"} if route.api_key else {}


async def _read(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, however many network reads it takes, up to ``MAX_BYTES``."""
    if response.status != 200:
        redirect = " (a redirect: see follow_redirects)" if response.status < 400 else ""
        raise ListingFailed(f"HTTP {response.status}{redirect}")
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > MAX_BYTES:
            raise ListingFailed(f"the answer is larger than {MAX_BYTES} bytes")
    return bytes(body)


def _described(exc: BaseException) -> str:
    """The exception's class and message, on one line and at most ``MAX_REASON`` characters."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


async def _ask(
    session: aiohttp.ClientSession, route: ModelConfig, path: str, body: Any = None
) -> bytes:
    """``GET`` (or, with ``body``, ``POST``) ``path`` of ``route``'s upstream; bounded."""
    method = "GET" if body is None else "POST"
    try:
        async with (
            asyncio.timeout(LIST_TIMEOUT),
            session.request(
                method,
                path,
                json=body,
                headers=_auth(route),
                allow_redirects=route.follow_redirects,
            ) as response,
        ):
            return await _read(response)
    except (aiohttp.ClientError, OSError) as exc:
        raise ListingFailed(_described(exc)) from None
    except TimeoutError:
        raise ListingFailed(f"no answer within {LIST_TIMEOUT:.0f} s") from None


async def list_models(session: aiohttp.ClientSession, route: ModelConfig) -> tuple[Listed, ...]:
    """The models ``route``'s upstream lists at ``{base_url}/models``."""
    return read_listing(await _ask(session, route, f"{route.base_url}/models"))


def _ollama_root(route: ModelConfig) -> str:
    """Ollama's own API beside its OpenAI one: ``base_url`` without its ``/v1``."""
    assert route.base_url is not None
    return route.base_url.removesuffix("/v1")


def ollama_window(show: Any) -> int | None:
    """The window an Ollama ``/api/show`` answer states: the ``num_ctx`` of the model file,
    no larger than the model's own ``<architecture>.context_length``."""
    if not isinstance(show, dict) or not isinstance(show.get("parameters"), str):
        return None
    num_ctx = _NUM_CTX.search(show["parameters"])
    window = _window(int(num_ctx[1])) if num_ctx else None
    info = show.get("model_info")
    if window is None or not isinstance(info, dict):
        return window
    trained = _window(info.get(f"{info.get('general.architecture')}.context_length"))
    return min(window, trained) if trained else window


async def _is_ollama(session: aiohttp.ClientSession, route: ModelConfig) -> bool:
    try:
        answer = orjson.loads(await _ask(session, route, f"{_ollama_root(route)}/api/version"))
    except (ListingFailed, orjson.JSONDecodeError):
        return False
    return isinstance(answer, dict) and isinstance(answer.get("version"), str)


async def ollama_windows(
    session: aiohttp.ClientSession, route: ModelConfig, ids: Iterable[str]
) -> dict[str, int | None]:
    """What Ollama's ``/api/show`` says of each model in ``ids``; empty when the upstream is
    not Ollama. A model it cannot describe has no window."""
    asked = list(ids)
    if not asked or not await _is_ollama(session, route):
        return {}
    gate = asyncio.Semaphore(ASK_AT_ONCE)

    async def show(model: str) -> int | None:
        async with gate:
            try:
                body = await _ask(
                    session, route, f"{_ollama_root(route)}/api/show", {"model": model}
                )
                return ollama_window(orjson.loads(body))
            except (ListingFailed, orjson.JSONDecodeError):
                return None

    windows = await asyncio.gather(*(show(model) for model in asked))
    return dict(zip(asked, windows, strict=True))


class Discovery:
    """The last model list of each discovery route, and the targets that serve them."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        refresh_every: float = REFRESH,
        retry_every: float = RETRY_UNLISTED,
    ) -> None:
        self._session = session
        # Seconds between listings, and between tries while a route was never listed.
        self.refresh_every = refresh_every
        self.retry_every = retry_every
        self._rescheduled = asyncio.Event()
        self._found: dict[str, tuple[Listed, ...]] = {}  # route name -> models last listed
        # (route name, base URL) -> model id -> what Ollama said of its window
        self._told: dict[tuple[str, str | None], dict[str, int | None]] = {}
        self._upstreams: dict[str, tuple[ModelConfig, Provider, CircuitBreaker]] = {}
        self.names: set[str] = set()  # the names served by discovery now

    async def _list(self, route: ModelConfig) -> tuple[Listed, ...]:
        listed = await list_models(self._session, route)
        if route.context_window is None and not any(model.window for model in listed):
            told = self._told.setdefault((route.name, route.base_url), {})
            new = [model.id for model in listed if model.id not in told]
            if new:  # each id is asked about once; not Ollama: each is None
                windows = await ollama_windows(self._session, route, new)
                told.update({model: windows.get(model) for model in new})
        return listed

    async def refresh(self, settings: Settings) -> None:
        """List every discovery route's upstream; one that fails keeps its last list."""
        routes = [route for route in settings.model_routes if route.discovers]
        results = await asyncio.gather(
            *(self._list(route) for route in routes), return_exceptions=True
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

    def reschedule(self) -> None:
        """The configuration changed (a reload listed it just now): start :meth:`due` over."""
        self._rescheduled.set()

    async def due(self, settings: Settings) -> bool:
        """Wait for the next listing under ``settings``: True once it is due, False when
        :meth:`reschedule` came first. Without discovery routes, only a reschedule ends it."""
        self._rescheduled.clear()
        if not any(route.discovers for route in settings.model_routes):
            delay = None
        else:
            # Sooner while an upstream has never been listed (started after the gateway, say).
            delay = self.refresh_every if self.complete(settings) else self.retry_every
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._rescheduled.wait()
                return False
        return True

    def _upstream(
        self, route: ModelConfig, settings: Settings
    ) -> tuple[ModelConfig, Provider, CircuitBreaker]:
        known = self._upstreams.get(route.name)
        if known is not None and known[0] == route:
            return known
        built = (
            route,
            build_provider(route, settings, self._session),
            CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown, name=route.name),
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
            told = self._told.get((route.name, route.base_url), {})
            for model in self._found.get(route.name, ()):
                name = route.prefix + model.name
                if name in taken:
                    continue
                taken.add(name)
                names.add(name)
                targets.append(
                    Target(
                        name,
                        provider,
                        model.id,
                        route.fallbacks,
                        breaker,
                        capabilities,
                        pricing_for(route, model.id),
                        route.context_window or model.window or told.get(model.id),
                        listed_by=route.name,
                        max_tokens=route.max_tokens,
                        context_fallbacks=route.context_fallbacks,
                    )
                )
        self.names = names
        return targets


DISCOVERY = web.AppKey("discovery", Discovery)
