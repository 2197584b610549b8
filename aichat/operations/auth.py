"""Client API keys: constant-time checks, per-key policies and the middleware that enforces them."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

from aichat.core.config import Settings
from aichat.core.errors import AuthenticationError
from aichat.core.exchange import ANONYMOUS, EXCHANGE, Handler, KeyPolicy

log = logging.getLogger("aichat.auth")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def key_matches(presented: str | None, expected: str) -> bool:
    """Whether ``presented`` is ``expected``, in time that reveals neither its bytes nor length."""
    return hmac.compare_digest(_digest(presented or ""), _digest(expected))


class FailedKeys:
    """Failed key attempts: all counted (for metrics), logged at most once per ``every`` s.

    Each line counts the attempts since the previous one and names up to ``ADDRESSES``
    client addresses with theirs, so a flood of wrong keys costs the log one line per
    interval, whatever its size.
    """

    ADDRESSES = 5

    def __init__(self, every: float = 10.0) -> None:
        self.total = 0
        self._every = every
        self._logged_at = -every
        self._pending = 0
        self._by_address: dict[str, int] = {}

    def record(self, address: str | None) -> None:
        """Count one failed attempt from ``address``; log if the interval has passed."""
        self.total += 1
        self._pending += 1
        where = address or "unknown"
        if where in self._by_address or len(self._by_address) < self.ADDRESSES:
            self._by_address[where] = self._by_address.get(where, 0) + 1
        now = time.monotonic()
        if now - self._logged_at < self._every:
            return
        addresses = ",".join(f"{a}:{n}" for a, n in self._by_address.items())
        log.warning(
            "failed key attempts",
            extra={"fields": {"attempts": self._pending, "from": addresses}},
        )
        self._logged_at, self._pending, self._by_address = now, 0, {}


FAILED_KEYS = web.AppKey("failed_keys", FailedKeys)


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

    def __len__(self) -> int:
        """How many keys are configured (for logs; never which)."""
        return len(self._entries)

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
    """Require a valid key on API paths and put its policy on the request's ``Exchange``.

    Health checks, metrics (which has its own key) and CORS preflight stay open.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(prefix) and request.method != "OPTIONS":
            policy = keys.lookup(presented_key(request)) if keys.enabled else ANONYMOUS
            if policy is None:
                request.app[FAILED_KEYS].record(request.remote)
                raise AuthenticationError(
                    "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>' "
                    "or 'x-api-key: <key>'."
                )
            exchange = request[EXCHANGE]
            exchange.key, exchange.authenticated = policy, True
            exchange.note(key=policy.name)
        return await handler(request)

    return middleware
