"""A recording pass-through between a coding agent and the gateway, and the fixtures it writes.

The agent talks to the recorder, the recorder to the gateway: every request is kept as the
agent sent it (method, path with query, headers, JSON body) and the answer streams back
chunk by chunk as the gateway writes it, so the agent sees exactly the gateway's stream.

A fixture holds requests without secrets or run-specific values: credentials are dropped,
ids and clock readings the agents make up per run become placeholders, the run's directories,
date and model name become fixed strings (``{model}`` is filled in again on replay), and the
keys of a body are sorted (the Codex CLI sends a map in a new order every run). Recording the
same traffic again gives the same file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

# Credentials, and what aiohttp sets itself when a request is sent again.
DROPPED_HEADERS = frozenset(
    {"authorization", "x-api-key", "host", "content-length", "accept-encoding", "connection"}
)
_NOT_FORWARDED = frozenset({"host", "content-length"})
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "content-encoding", "connection"})
# Made up per run: session, turn and request ids, device and item hashes, clock readings,
# the Codex CLI's ids of command output.
_VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32,}"
    r"|(?<=_ms\":)\d+|(?<=Chunk ID: )[0-9a-f]+"
)


@dataclass
class Exchange:
    """One request as the agent sent it, and what the gateway answered."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]
    body: Any
    raw: bytes = b""  # the body's bytes as the agent sent them
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response: bytes = b""


@dataclass
class Recorder:
    """Forwards to ``target`` and keeps every exchange."""

    target: str
    session: aiohttp.ClientSession
    exchanges: list[Exchange] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Forward ``request`` and stream the answer back as it arrives."""
        raw = await request.read()
        body = json.loads(raw) if raw else None
        exchange = Exchange(request.method, request.path_qs, dict(request.headers), body, raw)
        self.exchanges.append(exchange)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        async with self.session.request(
            request.method, self.target + request.path_qs, headers=headers, data=raw
        ) as upstream:
            exchange.status = upstream.status
            exchange.response_headers = dict(upstream.headers)
            passed = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            response = web.StreamResponse(status=upstream.status, headers=passed)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                exchange.response += chunk
                await response.write(chunk)
            await response.write_eof()
            return response

    def app(self) -> web.Application:
        """The recorder as an aiohttp application answering every path."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def model_requests(self, start: int = 0) -> list[Exchange]:
        """The exchanges from index ``start`` on that asked a model for an answer."""
        return [
            e for e in self.exchanges[start:] if e.method == "POST" and isinstance(e.body, dict)
        ]


@dataclass
class Recording:
    """The requests of one agent, scrubbed, on their way into a fixture file.

    Each distinct id gets its own stable placeholder: that keeps what ties requests together
    (a call id in a call and in its result), and a new recording of the same traffic gives
    the same file.
    """

    meta: dict[str, Any]
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    _seen: dict[str, str] = field(default_factory=dict)

    def _placeholder(self, match: re.Match[str]) -> str:
        value = match.group()
        if value not in self._seen:
            n = len(self._seen) + 1
            if "-" in value:
                self._seen[value] = f"00000000-0000-4000-8000-{n:012d}"
            else:
                self._seen[value] = f"{n:0{len(value)}d}"
        return self._seen[value]

    def _scrub(self, value: Any, replacements: dict[str, str]) -> Any:
        if isinstance(value, str):
            for old, new in replacements.items():
                value = value.replace(old, new)
            return _VOLATILE.sub(self._placeholder, value)
        if isinstance(value, list):
            return [self._scrub(v, replacements) for v in value]
        if isinstance(value, dict):
            return {k: self._scrub(v, replacements) for k, v in value.items()}
        return value

    def add(self, name: str, exchange: Exchange, replacements: dict[str, str]) -> None:
        """Keep ``exchange`` as request ``name``, every string in ``replacements`` replaced."""
        headers = {
            key.lower(): self._scrub(value, replacements)
            for key, value in sorted(exchange.headers.items(), key=lambda kv: kv[0].lower())
            if key.lower() not in DROPPED_HEADERS
        }
        self.requests[name] = {
            "name": name,
            "method": exchange.method,
            "path": exchange.path,
            "headers": headers,
            # Sorted: some agents send maps in a different order every run.
            "body": self._scrub(
                json.loads(json.dumps(exchange.body, sort_keys=True)), replacements
            ),
        }

    def save(self, path: Path, order: list[str]) -> None:
        """Write the requests in ``order``, one key per line for readable diffs."""
        doc = {**self.meta, "requests": [self.requests[name] for name in order]}
        path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
