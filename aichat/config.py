"""Settings: one pydantic model filled from the environment, an optional ``.env`` and CLI flags.

Precedence, highest first: CLI flags, real environment variables, ``.env`` in the working
directory, defaults. Every variable is listed in ``ENV_VARS`` (and in the README's table);
an invalid value fails at start with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

HistoryMode = Literal["transcript", "turns"]


class ConfigError(Exception):
    """Configuration that cannot be used; the message names the variable to fix."""


class Settings(BaseModel):
    """Everything the gateway can be configured with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(8001, ge=0, le=65535)
    aichats_base_url: str = "https://ai-chats.org"
    aichats_history: HistoryMode = "transcript"
    models: tuple[str, ...] = ("gpt-4o", "gpt-4o-2024-05-13")
    api_keys: tuple[SecretStr, ...] = ()
    allow_no_auth: bool = False
    cors_origins: tuple[str, ...] = ("*",)
    connect_timeout: float = Field(10.0, gt=0)
    first_byte_timeout: float = Field(60.0, gt=0)
    idle_timeout: float = Field(60.0, gt=0)
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("aichats_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("models", "cors_origins")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one entry")
        return value

    def require_auth_decision(self) -> None:
        """Refuse to run an open gateway unless the operator asked for one explicitly."""
        if not self.api_keys and not self.allow_no_auth:
            raise ConfigError(
                "No API key configured: set APP_SECRET or AICHAT_API_KEYS "
                "(or pass --insecure-no-auth / AICHAT_ALLOW_NO_AUTH=1 to run without auth)."
            )


# Environment variable -> (field, description). Order is the README's table order.
ENV_VARS: dict[str, tuple[str, str]] = {
    "AICHAT_HOST": ("host", "Address to listen on."),
    "AICHAT_PORT": ("port", "Port to listen on."),
    "AICHATS_BASE_URL": ("aichats_base_url", "Base URL of the aichats web-chat upstream."),
    "AICHATS_HISTORY": (
        "aichats_history",
        "How a conversation is sent to aichats: `transcript` (one folded turn) or `turns`.",
    ),
    "AICHAT_MODELS": ("models", "Comma-separated model names served by the aichats provider."),
    "APP_SECRET": ("api_keys", "One client API key (the reference proxy's name)."),
    "AICHAT_API_KEYS": ("api_keys", "Comma-separated client API keys (added to APP_SECRET)."),
    "AICHAT_ALLOW_NO_AUTH": ("allow_no_auth", "`1` to run without any key (logs a warning)."),
    "AICHAT_CORS_ORIGINS": ("cors_origins", "Comma-separated allowed CORS origins, or `*`."),
    "AICHAT_CONNECT_TIMEOUT": ("connect_timeout", "Seconds to connect to an upstream."),
    "AICHAT_FIRST_BYTE_TIMEOUT": (
        "first_byte_timeout",
        "Seconds from sending the request to the upstream's first answer byte.",
    ),
    "AICHAT_IDLE_TIMEOUT": ("idle_timeout", "Longest silence between two upstream reads."),
    "AICHAT_MAX_BODY_BYTES": ("max_body_bytes", "Largest accepted request body (413 beyond)."),
    "AICHAT_LOG_FORMAT": ("log_format", "`text` or `json`."),
    "AICHAT_LOG_LEVEL": ("log_level", "`DEBUG`, `INFO`, `WARNING` or `ERROR`."),
}

_LIST_FIELDS = {"models", "api_keys", "cors_origins"}
_TRUE = {"1", "true", "yes", "on"}


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _raw_values(env: Mapping[str, str | None]) -> dict[str, Any]:
    """Map environment variables onto field values, still as strings or lists of strings."""
    raw: dict[str, Any] = {}
    for var, (field, _) in ENV_VARS.items():
        value = env.get(var)
        if value is None or value == "":
            continue
        if field in _LIST_FIELDS:
            raw.setdefault(field, []).extend(_split(value))
        elif field == "allow_no_auth":
            raw[field] = value.strip().lower() in _TRUE
        else:
            raw[field] = value.strip()
    return raw


def _variable_for(field: str) -> str:
    names = [var for var, (f, _) in ENV_VARS.items() if f == field]
    return " / ".join(names) if names else field


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    dotenv_path: str | Path | None = ".env",
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from ``.env`` < ``env`` < ``overrides``; raise ConfigError on bad values."""
    merged: dict[str, str | None] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        merged.update(dotenv_values(dotenv_path))
    merged.update(os.environ if env is None else env)
    raw = _raw_values(merged)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings(**raw)
    except ValidationError as exc:
        problems = [
            f"{_variable_for(str(err['loc'][0]))}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        ]
        raise ConfigError("Invalid configuration: " + "; ".join(problems)) from None
