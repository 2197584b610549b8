"""Endpoints about the gateway itself: liveness, readiness and the model list."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aichat import __version__
from aichat.context import KEY_POLICY
from aichat.lifecycle import LIFECYCLE
from aichat.reload import LIVE
from aichat.routing import Target
from aichat.state import ROUTER


async def health(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok", "version": __version__})


async def ready(request: web.Request) -> web.Response:
    """Readiness: started and not draining; 503 tells load balancers to send traffic elsewhere.

    ``config`` is the loaded configuration's hash: after a reload, which one is served.
    """
    if request.app[LIFECYCLE].ready:
        return web.json_response({"status": "ready", "config": request.app[LIVE].hash})
    return web.json_response({"status": "unavailable"}, status=503)


def _model_object(target: Target, created: int) -> dict[str, Any]:
    return {
        "id": target.name,
        "object": "model",
        "created": created,
        "owned_by": target.provider.name,
    }


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: every routed model, in OpenAI's list shape."""
    created = request.app[LIFECYCLE].started_at
    policy = request[KEY_POLICY]
    data = [
        _model_object(target, created)
        for target in request.app[ROUTER].targets
        if policy.allows(target.name)
    ]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{id}``: one model, or 404 ``model_not_found``."""
    model = request.match_info["model"]
    (target, *_) = request.app[ROUTER].chain(model, request[KEY_POLICY].models)
    return web.json_response(_model_object(target, request.app[LIFECYCLE].started_at))
