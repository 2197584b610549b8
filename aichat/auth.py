"""Client API keys: constant-time checks, per-key policies and the middleware that enforces them."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from aichat.config import Settings
from aichat.context import KEY_POLICY, Handler, log_field
from aichat.errors import AuthenticationError


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """What one client key may do. 0 means unlimited; ``models`` None means every model."""

    name: str
    requests_per_minute: int = 0
    max_concurrent: int = 0
    models: frozenset[str] | None = None

    def allows(self, model: str) -> bool:
        """Whether this key may use ``model``."""
        return self.models is None or model in self.models


# The policy of every request when the operator chose to run without keys.
ANONYMOUS = KeyPolicy("anonymous")


class KeyRing:
    """The configured keys, as SHA-256 digests, each with its policy.

    Equal-length digests make ``compare_digest`` constant-time even for guesses of another
    length, and every key is compared on every lookup, so timing reveals neither a key's
    bytes nor which key (or how many) exist. No plaintext key is kept.
    """

    __slots__ = ("_entries",)

    def __init__(self, entries: Iterable[tuple[bytes, KeyPolicy]]) -> None:
        self._entries = tuple(entries)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """Keys from ``APP_SECRET``/``AICHAT_API_KEYS`` and the config file's ``[[keys]]``."""
        rpm, concurrent = settings.rate_limit_rpm, settings.max_concurrent_per_key
        entries = [
            (_digest(key.get_secret_value()), KeyPolicy(f"key-{i}", rpm, concurrent))
            for i, key in enumerate(settings.api_keys, 1)
        ]
        for key in settings.keys:
            digest = (
                bytes.fromhex(key.key_sha256)
                if key.key_sha256
                else _digest(key.key.get_secret_value() if key.key else "")
            )
            policy = KeyPolicy(
                key.name,
                rpm if key.requests_per_minute is None else key.requests_per_minute,
                concurrent if key.max_concurrent is None else key.max_concurrent,
                None if key.models is None else frozenset(key.models),
            )
            entries.append((digest, policy))
        return cls(entries)

    def replace(self, other: KeyRing) -> None:
        """Take ``other``'s keys (a reload); policies already handed out stay as they are."""
        self._entries = other._entries

    @property
    def enabled(self) -> bool:
        """False when the gateway runs without auth (explicitly allowed in config)."""
        return bool(self._entries)

    def lookup(self, presented: str | None) -> KeyPolicy | None:
        """The policy of ``presented``, or None when it is not a configured key."""
        if presented is None:
            return None
        candidate = _digest(presented)
        found = None
        for digest, policy in self._entries:
            if hmac.compare_digest(candidate, digest):
                found = policy
        return found


def presented_key(request: web.Request) -> str | None:
    """The key sent as ``Authorization: Bearer <key>`` or (Anthropic clients) ``x-api-key``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip() or None


def auth_middleware(keys: KeyRing, prefix: str = "/v1/") -> Middleware:
    """Require a valid key on API paths and remember its policy for the request.

    Health checks, metrics (which has its own key) and CORS preflight stay open.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(prefix) and request.method != "OPTIONS":
            policy = keys.lookup(presented_key(request)) if keys.enabled else ANONYMOUS
            if policy is None:
                raise AuthenticationError(
                    "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>' "
                    "or 'x-api-key: <key>'."
                )
            request[KEY_POLICY] = policy
            log_field(request, key=policy.name)
        return await handler(request)

    return middleware
