"""Model names -> the provider (and upstream model name) that serves them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aichat.errors import NotFound


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """One model clients can ask for."""

    name: str
    provider: str
    upstream_model: str


class Router:
    """Looks up the route of a requested model name."""

    def __init__(self, routes: Iterable[ModelRoute]) -> None:
        self._routes = {route.name: route for route in routes}

    @property
    def routes(self) -> list[ModelRoute]:
        """Every route, in configuration order."""
        return list(self._routes.values())

    def resolve(self, model: str) -> ModelRoute:
        """The route for ``model``; 404 ``model_not_found`` as OpenAI answers."""
        route = self._routes.get(model)
        if route is None:
            raise NotFound(
                f"The model '{model}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return route
