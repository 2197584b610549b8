"""One request on its way down the layers: the ``Exchange``, made once at the inbound edge.

Decisions:

- Everything the layers learn about one request and pass on lives in one explicit object:
  who asked (the key's policy), when it arrived and when its upstream was called and done
  (``Server-Timing`` and the access line), the access line's fields, the headers its answer
  will carry (rate limits, budgets), and its id. The access-log middleware creates it, auth
  and limits fill it in, the handler hands it down to the answer path, and the response
  hooks read it. No layer reads per-request state from aiohttp's ``Request`` otherwise.
- It is a plain object with slots: a request costs one allocation for all of it, and a
  field is read as an attribute, not looked up in a mapping.
- ``KeyPolicy`` is a value the layers below inbound all read, so it lives here, below them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


# The policy of every request when the operator chose to run without keys (and of requests
# to paths that need no key).
ANONYMOUS = KeyPolicy("anonymous")


@dataclass(slots=True)
class Exchange:
    """One request and what the gateway has learnt of it so far.

    ``arrived``, ``upstream_called`` and ``upstream_done`` are ``time.perf_counter()``
    readings; ``fields`` are the access line's extra fields; ``headers`` go on the answer.
    """

    request_id: str
    arrived: float
    key: KeyPolicy = ANONYMOUS
    authenticated: bool = False  # a key (or the operator's choice of none) let it in
    fields: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    upstream_called: float | None = None
    upstream_done: float | None = None

    def note(self, **fields: Any) -> None:
        """Add fields to the access line."""
        self.fields.update(fields)


EXCHANGE = web.RequestKey("exchange", Exchange)
