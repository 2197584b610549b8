"""Model names -> the provider instance (and upstream model name) that serves them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aichat.answer.capabilities import CAPABILITIES, Capabilities
from aichat.core.errors import NotFound
from aichat.operations.breaker import CircuitBreaker
from aichat.operations.pricing import Free, Pricing
from aichat.providers.base import Provider


@dataclass(frozen=True, slots=True)
class Target:
    """One model clients can ask for, bound to the provider that serves it."""

    name: str
    provider: Provider
    upstream_model: str
    fallbacks: tuple[str, ...] = ()
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(0, 1.0))
    capabilities: Capabilities = CAPABILITIES["openai"]
    pricing: Pricing = field(default_factory=Free)
    context_window: int | None = None  # tokens, where configured or told by the upstream
    listed_by: str | None = None  # the discovery route whose upstream listed this model
    # The answer-length limit when a request sets none: what budgets hold for its answer.
    max_tokens: int = 4096
    # Models with larger windows to try instead when a prompt overflows this one's.
    context_fallbacks: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How logs and the ``x-aichat-upstream`` header name this target."""
        return f"{self.name} ({self.provider.name})"

    @property
    def metric_name(self) -> str:
        """The model's name in metric labels: a configured name, never an upstream's (a
        discovered model is counted under its discovery route)."""
        return self.listed_by or self.name

    @property
    def metric_label(self) -> str:
        """The upstream's name in metric labels, as ``label`` but from configuration only."""
        return f"{self.metric_name} ({self.provider.name})"


def _unknown(model: str) -> NotFound:
    return NotFound(
        f"The model '{model}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


class Router:
    """Looks up the target of a requested model name, and its fallbacks."""

    def __init__(self, targets: Iterable[Target]) -> None:
        self.replace(targets)

    def replace(self, targets: Iterable[Target]) -> None:
        """Serve ``targets`` from now on (a reload); chains already handed out stay as they are."""
        self._targets = {target.name: target for target in targets}
        names = {target.name: target.metric_name for target in self._targets.values()}
        labels = {target.label: target.metric_label for target in self._targets.values()}
        self._metric_names: Mapping[str, str] = {**names, **labels}

    def metric_names(self) -> Mapping[str, str]:
        """Each target's name and label -> what metric labels call it."""
        return self._metric_names

    @property
    def targets(self) -> list[Target]:
        """Every target, in configuration order."""
        return list(self._targets.values())

    def resolve(self, model: str) -> Target:
        """The target for ``model``; 404 ``model_not_found`` as OpenAI answers."""
        target = self._targets.get(model)
        if target is None:
            raise _unknown(model)
        return target

    def chain(self, model: str, allowed: frozenset[str] | None = None) -> list[Target]:
        """``model``'s target followed by its fallbacks, in the order to try them.

        Fallbacks are not followed transitively: each model lists its whole chain. With
        ``allowed`` (a key's models), other models do not exist for this caller.
        """
        if allowed is not None and model not in allowed:
            raise _unknown(model)  # as OpenAI answers: no hint that the model exists
        primary = self.resolve(model)
        return [primary, *(self._targets[name] for name in primary.fallbacks)]

    def larger(self, target: Target) -> list[Target]:
        """The models ``target`` names to try, in order, when a prompt overflows its window."""
        return [self._targets[name] for name in target.context_fallbacks]

    def circuits(self) -> dict[str, str]:
        """Each target's circuit state, for metrics (discovered models share their route's)."""
        return {target.metric_label: target.breaker.state for target in self._targets.values()}
