"""A trace receiver at the network edge: OTLP/HTTP on 127.0.0.1, decoded with OTLP's own types.

It keeps what a real receiver would store of each span (names, ids, kind, status and
attributes as plain values), so tests ask it what arrived, as they ask Phoenix.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_plain(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


@dataclass
class Span:
    """One span as received."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: str  # SPAN_KIND_SERVER, SPAN_KIND_CLIENT, ...
    status: str  # STATUS_CODE_UNSET, STATUS_CODE_ERROR, ...
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _open() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass
class Receiver:
    """Accepts ``POST /v1/traces``; ``spans`` is everything received, in order.

    A slow receiver: clear ``answering`` and each export waits until it is set again
    (``waiting`` counts them, ``held`` is set by the first).
    """

    spans: list[Span] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    answering: asyncio.Event = field(default_factory=_open)
    waiting: int = 0
    held: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        if not self.answering.is_set():
            self.waiting += 1
            self.held.set()
            await self.answering.wait()
            self.waiting -= 1
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            resource = {kv.key: _plain(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    as_dict = MessageToDict(span)
                    self.spans.append(
                        Span(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=as_dict.get("kind", ""),
                            status=as_dict.get("status", {}).get("code", "STATUS_CODE_UNSET"),
                            attributes={kv.key: _plain(kv.value) for kv in span.attributes},
                            resource=resource,
                        )
                    )
        self.arrived.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def wait_for(self, count: int) -> list[Span]:
        """The spans received once there are at least ``count`` (within 10 s)."""
        async with asyncio.timeout(10):
            while len(self.spans) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.spans
