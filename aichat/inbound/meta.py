"""Endpoints about the gateway itself: liveness, readiness and the model list."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from aichat import __version__
from aichat.answer.reload import LIVE
from aichat.answer.routing import Target
from aichat.answer.state import ROUTER
from aichat.core.errors import InvalidRequest
from aichat.core.exchange import EXCHANGE
from aichat.inbound.codex_catalog import codex_catalog
from aichat.operations.lifecycle import LIFECYCLE
from aichat.operations.metrics import require_metrics_key


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok", "version": __version__})


def _upstreams(request: web.Request) -> list[dict[str, Any]]:
    return [
        {"model": target.name, "upstream": target.label, **asdict(target.breaker.report())}
        for target in request.app[ROUTER].targets
    ]


async def ready(request: web.Request) -> web.Response:
    """Readiness: started and not draining; 503 tells load balancers to send traffic elsewhere.

    With ``?verbose=1`` (behind the metrics key, when one is set: it tells which upstreams
    fail and why) the answer lists every model's upstream, its circuit and its last error,
    and ``config``: the loaded configuration's hash, which after a reload says which one is
    served.
    """
    verbose = request.query.get("verbose", "0")
    if verbose not in ("0", "1"):
        raise InvalidRequest("verbose must be 0 or 1.", param="verbose", code="invalid_value")
    is_ready = request.app[LIFECYCLE].ready
    body: dict[str, Any] = {"status": "ready" if is_ready else "unavailable"}
    if verbose == "1" and ROUTER in request.app:
        require_metrics_key(request)
        body["config"] = request.app[LIVE].hash
        body["upstreams"] = _upstreams(request)
    return web.json_response(body, status=200 if is_ready else 503)


def _model_object(target: Target, created: int) -> dict[str, Any]:
    model: dict[str, Any] = {
        "id": target.name,
        "object": "model",
        "created": created,
        "owned_by": target.provider.name,
    }
    if target.context_window is not None:
        model["context_window"] = target.context_window
    return model


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: every routed model, in OpenAI's list shape, each with its
    ``context_window`` where known; with ``?client_version=``, the Codex CLI's catalog too."""
    created = request.app[LIFECYCLE].started_at
    policy = request[EXCHANGE].key
    targets = [target for target in request.app[ROUTER].targets if policy.allows(target.name)]
    body: dict[str, Any] = {
        "object": "list",
        "data": [_model_object(target, created) for target in targets],
    }
    if "client_version" in request.query:
        body["models"] = codex_catalog(targets)
    return web.json_response(body)


async def get_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{id}``: one model, or 404 ``model_not_found``."""
    model = request.match_info["model"]
    (target, *_) = request.app[ROUTER].chain(model, request[EXCHANGE].key.models)
    return web.json_response(_model_object(target, request.app[LIFECYCLE].started_at))
