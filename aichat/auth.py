"""Client API keys: constant-time checks and the middleware that enforces them."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from aichat.context import Handler
from aichat.errors import AuthenticationError


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyChecker:
    """Accepts any of the configured keys, in time independent of where keys differ.

    Keys are held and compared as SHA-256 digests: equal lengths make ``compare_digest``
    constant-time even for guesses of another length, and every key is compared on every
    check so timing does not reveal which key (or how many) exist.
    """

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key) for key in keys)

    @property
    def enabled(self) -> bool:
        """False when the gateway runs without auth (explicitly allowed in config)."""
        return bool(self._digests)

    def accepts(self, presented: str | None) -> bool:
        """Whether ``presented`` is one of the configured keys."""
        if presented is None:
            return False
        candidate = _digest(presented)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(candidate, digest)
        return found


def presented_key(request: web.Request) -> str | None:
    """The key a client sent as ``Authorization: Bearer <key>``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def auth_middleware(checker: KeyChecker, prefix: str = "/v1/") -> Middleware:
    """Require a valid key on API paths; health checks and CORS preflight stay open."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            checker.enabled
            and request.path.startswith(prefix)
            and request.method != "OPTIONS"
            and not checker.accepts(presented_key(request))
        ):
            raise AuthenticationError(
                "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'."
            )
        return await handler(request)

    return middleware
