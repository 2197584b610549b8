"""The model metadata the Codex CLI reads, so that it knows each model's context window.

Decisions:

- The Codex CLI (0.156 and later) asks a custom provider for its model catalog when its
  config sets ``model_catalog_url`` and ``[features] api_key_model_discovery = true``:
  ``GET <model_catalog_url>?client_version=<its version>``, with the provider's key, read as
  ``{"models": [...]}``. A model missing from it gets "Model metadata for `<model>` not
  found" and Codex's fallback metadata: a 272,000-token window, whatever the model holds.
- One address serves both readers: ``GET /v1/models`` answers OpenAI's list (``data``) and,
  when the query names a ``client_version``, Codex's catalog (``models``) beside it.
- An entry holds what Codex requires (measured against the pinned CLI: an entry without one
  of these fields fails the whole catalog) and what aichat knows: the name, the context
  window when known (Codex compacts at 90% of it; unknown: Codex's own default stays) and
  whether images go in. Every tool setting is the one Codex's fallback metadata gives a model
  it does not know, so the tools it offers are the same with or without the catalog.
- ``base_instructions`` is required; Codex sends it as the conversation's first developer
  message. Codex's built-in instructions are its authors' text (and about 4,000 tokens, more
  than a small local model holds), which aichat does not copy: a short instruction of its
  own stands in. ``model_instructions_file`` in Codex's config.toml replaces it.
"""

from __future__ import annotations

from typing import Any

from aichat.answer.routing import Target

BASE_INSTRUCTIONS = (
    "You are a coding agent working in the user's workspace through the Codex CLI. Use the "
    "tools you are given to read files, run commands and make the changes asked for; check "
    "your work, and end each turn with a short account of what you did and what is left."
)


def codex_model(target: Target, priority: int) -> dict[str, Any]:
    """One entry of the Codex CLI's model catalog for ``target``."""
    entry: dict[str, Any] = {
        "slug": target.name,
        "display_name": target.name,
        "description": f"{target.name}, served by aichat",
        "base_instructions": BASE_INSTRUCTIONS,
        "visibility": "list",
        "supported_in_api": True,
        "priority": priority,
        "shell_type": "default",
        "supported_reasoning_levels": [],
        "support_verbosity": False,
        "truncation_policy": {"mode": "bytes", "limit": 10_000},
        "experimental_supported_tools": [],
        "input_modalities": ["text", "image"] if target.capabilities.vision else ["text"],
    }
    if target.context_window is not None:
        entry["context_window"] = target.context_window
    return entry


def codex_catalog(targets: list[Target]) -> list[dict[str, Any]]:
    """The catalog's ``models``: one entry per target, in the order they are listed."""
    return [codex_model(target, priority) for priority, target in enumerate(targets)]
