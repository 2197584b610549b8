"""Build the provider instance that serves a configured model."""

from __future__ import annotations

import aiohttp

from aichat.core.config import ModelConfig, Settings
from aichat.providers.aichats import AichatsProvider
from aichat.providers.anthropic import DEFAULT_BASE_URL as ANTHROPIC_URL
from aichat.providers.anthropic import AnthropicProvider
from aichat.providers.base import Provider
from aichat.providers.http import UpstreamBounds
from aichat.providers.mock import MockProvider
from aichat.providers.openai import OpenAIProvider
from aichat.providers.reasoning import StrippedReasoning
from aichat.providers.responses import ResponsesProvider
from aichat.providers.tool_emulation import EmulatedTools


def build_provider(
    model: ModelConfig, settings: Settings, session: aiohttp.ClientSession
) -> Provider:
    """The provider instance serving ``model``, on the application's shared session."""
    provider = _upstream(model, settings, session)
    if model.reasoning == "strip":
        # Innermost: reasoning must not reach the tool-call scanner either.
        provider = StrippedReasoning(provider)
    return EmulatedTools(provider) if model.emulate_tools else provider


def _upstream(model: ModelConfig, settings: Settings, session: aiohttp.ClientSession) -> Provider:
    bounds = UpstreamBounds(
        first_byte=settings.first_byte_timeout,
        idle=settings.idle_timeout,
        total=settings.total_timeout if model.total_timeout is None else model.total_timeout,
        max_line=settings.max_line_bytes,
        max_answer=settings.max_answer_bytes,
        follow_redirects=model.follow_redirects,
    )
    if model.provider == "aichats":
        base_url = model.base_url or settings.aichats_base_url
        return AichatsProvider(session, base_url, settings.aichats_history, bounds)
    key = model.api_key.get_secret_value() if model.api_key else None
    if model.provider == "anthropic":
        return AnthropicProvider(
            session,
            model.base_url or ANTHROPIC_URL,
            key,
            bounds,
            version=model.anthropic_version,
            headers=model.headers,
            max_tokens=model.max_tokens,
            prompt_caching=model.prompt_caching == "auto",
        )
    if model.provider == "openai":
        assert model.base_url is not None  # checked when the config was loaded
        if model.api == "responses":
            return ResponsesProvider(session, model.base_url, key, bounds, model.headers)
        return OpenAIProvider(session, model.base_url, key, bounds, model.headers)
    return MockProvider(
        model.text, model.tokens_per_second, model.first_token_delay, model.fail_after
    )
