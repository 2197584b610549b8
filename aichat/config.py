"""Settings: one pydantic model filled from the environment, an optional ``.env`` and CLI flags.

Precedence, highest first: CLI flags, real environment variables, ``.env`` in the working
directory, defaults. Every variable is listed in ``ENV_VARS`` (and in the README's table);
an invalid value fails at start with a message naming the variable.

Model routing comes from an optional TOML file (``AICHAT_CONFIG`` / ``--config``) of
``[[models]]`` tables; without one, every name in ``AICHAT_MODELS`` goes to aichats.
Upstream secrets are named by environment variable in that file, never written in it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

HistoryMode = Literal["transcript", "turns"]
ProviderKind = Literal["aichats", "openai", "mock"]


class ConfigError(Exception):
    """Configuration that cannot be used; the message names the variable to fix."""


class ModelConfig(BaseModel):
    """One ``[[models]]`` table: a name clients ask for and where it is served."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    provider: ProviderKind
    upstream_model: str | None = None  # default: the same as ``name``
    base_url: str | None = None  # required for openai; overrides AICHATS_BASE_URL for aichats
    api_key_env: str | None = None  # the variable that holds the upstream key
    api_key: SecretStr | None = None  # resolved from ``api_key_env`` at load time
    fallbacks: tuple[str, ...] = ()
    # mock provider: a fixed answer (default: echo the last user message) and its pace.
    text: str | None = None
    tokens_per_second: float = Field(0.0, ge=0)  # 0: as fast as possible
    first_token_delay: float = Field(0.0, ge=0)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @property
    def target_model(self) -> str:
        """The model name sent upstream."""
        return self.upstream_model or self.name


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class Settings(BaseModel):
    """Everything the gateway can be configured with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(8001, ge=0, le=65535)
    aichats_base_url: str = "https://ai-chats.org"
    aichats_history: HistoryMode = "transcript"
    models: tuple[str, ...] = ("gpt-4o", "gpt-4o-2024-05-13")
    config_file: Path | None = None
    routes: tuple[ModelConfig, ...] = ()  # from config_file; empty: ``models`` via aichats
    retries: int = Field(2, ge=0, le=10)
    retry_backoff: float = Field(0.25, ge=0)
    retry_max_wait: float = Field(5.0, ge=0)
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
    def _base_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("models", "cors_origins")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one entry")
        return value

    @property
    def model_routes(self) -> tuple[ModelConfig, ...]:
        """The configured routes, or the default of every ``models`` name served by aichats."""
        return self.routes or tuple(ModelConfig(name=n, provider="aichats") for n in self.models)

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
    "AICHAT_CONFIG": ("config_file", "TOML file of `[[models]]` routes (replaces AICHAT_MODELS)."),
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
    "AICHAT_RETRIES": ("retries", "Retries of a failing upstream before its fallbacks."),
    "AICHAT_RETRY_BACKOFF": ("retry_backoff", "First retry delay in seconds; doubles, jittered."),
    "AICHAT_RETRY_MAX_WAIT": (
        "retry_max_wait",
        "Longest wait before a retry; a longer Retry-After skips to fallbacks.",
    ),
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


def _toml_location(loc: tuple[int | str, ...], models: list[Any]) -> str:
    """``[[models]] #2 (name = "x") key`` for a pydantic error location under ``models``."""
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        index = loc[1]
        name = models[index].get("name") if isinstance(models[index], dict) else None
        where = f"[[models]] #{index + 1}" + (f' (name = "{name}")' if name else "")
        rest = ".".join(str(part) for part in loc[2:])
        return f"{where} {rest}".strip()
    return ".".join(str(part) for part in loc)


class _RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[ModelConfig] = Field(min_length=1)


def load_routes(path: Path, env: Mapping[str, str | None]) -> tuple[ModelConfig, ...]:
    """Read and check a routes file; errors name the file, the table and the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        routes = _RoutesFile.model_validate(data).models
    except ValidationError as exc:
        given = data.get("models")
        models: list[Any] = given if isinstance(given, list) else []
        problems = [
            f"{_toml_location(tuple(err['loc']), models)}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise ConfigError(f"{path}: " + "; ".join(problems)) from None
    return _checked_routes(path, routes, env)


def _checked_routes(
    path: Path, routes: list[ModelConfig], env: Mapping[str, str | None]
) -> tuple[ModelConfig, ...]:
    names = [route.name for route in routes]
    problems = [f'model "{n}" is defined twice' for n in sorted(set(names)) if names.count(n) > 1]
    resolved = []
    for route in routes:
        where = f'[[models]] name = "{route.name}"'
        problems += [
            f"{where} fallbacks: no model named {fallback!r}"
            for fallback in route.fallbacks
            if fallback not in names or fallback == route.name
        ]
        if route.provider == "openai" and route.base_url is None:
            problems.append(f"{where} base_url: required for provider 'openai'")
        if route.api_key is not None:
            problems.append(
                f"{where} api_key: put the key in the environment, name it in api_key_env"
            )
        key = None
        if route.api_key_env:
            key = env.get(route.api_key_env)
            if not key:
                problems.append(f"{where} api_key_env: {route.api_key_env} is not set")
        resolved.append(route.model_copy(update={"api_key": SecretStr(key) if key else None}))
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return tuple(resolved)


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
    if raw.get("config_file"):
        raw["routes"] = load_routes(Path(raw["config_file"]), merged)
    try:
        return Settings(**raw)
    except ValidationError as exc:
        problems = [
            f"{_variable_for(str(err['loc'][0]))}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        ]
        raise ConfigError("Invalid configuration: " + "; ".join(problems)) from None
