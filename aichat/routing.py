"""Model names -> the provider instance (and upstream model name) that serves them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aichat.errors import NotFound
from aichat.providers.base import Provider


@dataclass(frozen=True, slots=True)
class Target:
    """One model clients can ask for, bound to the provider that serves it."""

    name: str
    provider: Provider
    upstream_model: str
    fallbacks: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How logs and the ``x-aichat-upstream`` header name this target."""
        return f"{self.name} ({self.provider.name})"


class Router:
    """Looks up the target of a requested model name, and its fallbacks."""

    def __init__(self, targets: Iterable[Target]) -> None:
        self._targets = {target.name: target for target in targets}

    @property
    def targets(self) -> list[Target]:
        """Every target, in configuration order."""
        return list(self._targets.values())

    def resolve(self, model: str) -> Target:
        """The target for ``model``; 404 ``model_not_found`` as OpenAI answers."""
        target = self._targets.get(model)
        if target is None:
            raise NotFound(
                f"The model '{model}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return target

    def chain(self, model: str) -> list[Target]:
        """``model``'s target followed by its fallbacks, in the order to try them.

        Fallbacks are not followed transitively: each model lists its whole chain.
        """
        primary = self.resolve(model)
        return [primary, *(self._targets[name] for name in primary.fallbacks)]
