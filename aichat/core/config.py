"""Settings: one pydantic model filled from the environment, an optional ``.env`` and CLI flags.

Precedence, highest first: CLI flags, real environment variables, ``.env`` in the working
directory, defaults. Every variable is listed in ``ENV_VARS`` (and in the README's table);
an invalid value fails at start with a message naming the variable.

Model routing comes from an optional TOML file (``AICHAT_CONFIG`` / ``--config``) of
``[[models]]`` tables; without one, every name in ``AICHAT_MODELS`` goes to aichats.
Upstream secrets are named by environment variable in that file, never written in it. An
upstream key variable left unset is a warning, not an error: local OpenAI-compatible servers
(Ollama, llama.cpp) need no key, so the request goes without one. Client keys (``[[keys]]``)
named by an unset variable stop the start: a key nobody can present is a mistake.

Booleans accept ``1/0``, ``true/false``, ``yes/no`` and ``on/off`` in any case; anything else
stops the start, so a typo never silently means "off".
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

HistoryMode = Literal["transcript", "turns"]
MAX_CONTEXT_WINDOW = 100_000_000  # tokens: a larger window is a mistake, not a model
ProviderKind = Literal["aichats", "openai", "anthropic", "mock"]


class StartupError(Exception):
    """The gateway cannot start; the message is one line naming the cause and the fix."""


class ConfigError(StartupError):
    """Configuration that cannot be used; the message names the variable to fix."""


class PriceConfig(BaseModel):
    """A route's own prices in US dollars per million tokens (``aichat.operations.pricing``).

    ``cache_read`` and ``cache_write`` (parts of the prompt the upstream read from or wrote to
    its prompt cache) cost as much as other input unless set.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0, le=1_000_000)
    output: Decimal = Field(ge=0, le=1_000_000)
    cache_read: Decimal | None = Field(None, ge=0, le=1_000_000)
    cache_write: Decimal | None = Field(None, ge=0, le=1_000_000)


class ModelConfig(BaseModel):
    """One ``[[models]]`` table: a name clients ask for and where it is served."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    provider: ProviderKind
    upstream_model: str | None = None  # default: the same as ``name``
    # Required for openai; anthropic: default https://api.anthropic.com; aichats: overrides
    # AICHATS_BASE_URL.
    base_url: str | None = None
    api_key_env: str | None = None  # the variable that holds the upstream key
    # openai: the API spoken upstream, Chat Completions or Responses.
    api: Literal["chat", "responses"] = "chat"
    # anthropic: the anthropic-version header (a Messages client's own wins).
    anthropic_version: str = "2023-06-01"
    # Extra headers sent upstream with every request of this route.
    headers: dict[str, str] = Field(default_factory=dict)
    # The answer-length limit sent to upstreams that need one (Messages) when the client
    # sets none.
    max_tokens: int = Field(4096, ge=1)
    api_key: SecretStr | None = None  # resolved from ``api_key_env`` at load time
    fallbacks: tuple[str, ...] = ()
    # Models with larger windows, tried in order when a prompt overflows this one's (only then).
    context_fallbacks: tuple[str, ...] = ()
    # anthropic: "auto" places cache_control breakpoints in requests translated from another
    # API (a Messages client's own request goes as sent).
    prompt_caching: Literal["auto"] | None = None
    # mock provider: a fixed answer (default: echo the last user message) and its pace.
    text: str | None = None
    tokens_per_second: float = Field(0.0, ge=0)  # 0: as fast as possible
    first_token_delay: float = Field(0.0, ge=0)
    fail_after: int | None = Field(None, ge=0)  # mock: an upstream error after this many pieces
    # aichats and mock: describe tools in the prompt and parse calls out of the answer.
    emulate_tools: bool = False
    # What clients see of the model's reasoning: as the upstream sent it, or nothing.
    reasoning: Literal["passthrough", "strip"] = "passthrough"
    # Seconds one attempt may take from request to last byte (default AICHAT_TOTAL_TIMEOUT).
    total_timeout: float | None = Field(None, ge=0)
    # An upstream's 3xx is an error unless this is set: a redirect re-sends the prompt
    # (and the upstream key) wherever the upstream points.
    follow_redirects: bool = False
    # openai: serve every model the upstream lists (``aichat.answer.discovery``), named
    # ``prefix`` + id.
    models: Literal["discover"] | None = None
    prefix: str = Field("", max_length=64)
    # What its answers cost: its own prices, or the genai-prices provider whose prices apply
    # (a proxy of OpenAI: "openai"); unset: the provider its base_url names (aichats and
    # mock: nothing).
    price: PriceConfig | str | None = None
    # Tokens the model holds, prompt and answer together: told to clients in /v1/models and
    # to coding agents. Unset: what the upstream says, where it says (discovered models).
    context_window: int | None = Field(None, ge=1, le=MAX_CONTEXT_WINDOW)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @property
    def target_model(self) -> str:
        """The model name sent upstream."""
        return self.upstream_model or self.name

    @property
    def discovers(self) -> bool:
        """Whether this table stands for the models its upstream lists, not one model."""
        return self.models == "discover"


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class KeyConfig(BaseModel):
    """One ``[[keys]]`` table: a client key, stored hashed or named by variable, and its limits.

    Limits left unset take the ``AICHAT_RATE_LIMIT_RPM`` / ``AICHAT_MAX_CONCURRENT_PER_KEY``
    defaults; 0 means unlimited. ``models`` restricts the key to those model names.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    key_env: str | None = None
    key: SecretStr | None = None  # resolved from ``key_env`` at load time
    requests_per_minute: int | None = Field(None, ge=0)
    max_concurrent: int | None = Field(None, ge=0)
    models: tuple[str, ...] | None = None
    # Token budgets over UTC calendar windows (see ``aichat.operations.budgets``); unset: none.
    tokens_per_day: int | None = Field(None, ge=1)
    tokens_per_month: int | None = Field(None, ge=1)
    # Budgets in US dollars over the same windows, from each answer's price
    # (``aichat.operations.pricing``); at most a million dollars, so nano-dollar counts stay
    # exact in Redis's Lua numbers.
    usd_per_day: Decimal | None = Field(None, gt=0, le=1_000_000)
    usd_per_month: Decimal | None = Field(None, gt=0, le=1_000_000)


class Settings(BaseModel):
    """Everything the gateway can be configured with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(8001, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=256)
    aichats_base_url: str = "https://ai-chats.org"
    aichats_history: HistoryMode = "transcript"
    models: tuple[str, ...] = ("gpt-4o", "gpt-4o-2024-05-13")
    config_file: Path | None = None
    routes: tuple[ModelConfig, ...] = ()  # from config_file; empty: ``models`` via aichats
    keys: tuple[KeyConfig, ...] = ()  # from config_file's [[keys]] tables
    rate_limit_rpm: int = Field(0, ge=0)
    max_concurrent_per_key: int = Field(0, ge=0)
    max_concurrent: int = Field(512, ge=1)
    queue_timeout: float = Field(2.0, ge=0)
    max_loop_lag: float = Field(0.5, ge=0)  # 0: never shed for it
    redis_url: str | None = None
    redis_prefix: str = "aichat:"
    redis_failure: Literal["open", "closed"] = "open"
    breaker_failures: int = Field(5, ge=0)
    breaker_cooldown: float = Field(30.0, gt=0)
    drain_timeout: float = Field(30.0, ge=0)
    metrics_key: SecretStr | None = None
    admin_key: SecretStr | None = None
    usage_db: Path = Path("aichat-usage.db")
    database_url: SecretStr | None = None
    retries: int = Field(2, ge=0, le=10)
    retry_backoff: float = Field(0.25, ge=0)
    retry_max_wait: float = Field(5.0, ge=0)
    api_keys: tuple[SecretStr, ...] = ()
    allow_no_auth: bool = False
    cors_origins: tuple[str, ...] = ("*",)
    connect_timeout: float = Field(10.0, gt=0)
    first_byte_timeout: float = Field(60.0, gt=0)
    idle_timeout: float = Field(60.0, gt=0)
    total_timeout: float = Field(600.0, ge=0)  # 0: no deadline
    max_line_bytes: int = Field(1024 * 1024, gt=0)
    max_answer_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    body_timeout: float = Field(30.0, gt=0)
    header_timeout: float = Field(10.0, gt=0)
    keepalive_timeout: float = Field(75.0, gt=0)
    redis_max_connections: int = Field(100, ge=1)
    playground: bool = True  # the built-in page at /
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    pid_file: Path | None = None  # None: aichat-<port>.pid in the temporary directory

    @field_validator("aichats_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("must be a PostgreSQL URL: postgresql://user:password@host/db")
        return value

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

    def warnings(self) -> list[str]:
        """Settings that work but may surprise: said at start and by ``aichat config show``."""
        return [
            f'[[models]] name = "{route.name}": {route.api_key_env} is not set, so requests '
            f"to {route.base_url or self.aichats_base_url} carry no API key "
            "(fine for local servers such as Ollama or llama.cpp)"
            for route in self.routes
            if route.api_key_env and route.api_key is None
        ]

    def require_auth_decision(self) -> None:
        """Refuse to run an open gateway unless the operator asked for one explicitly."""
        if not self.api_keys and not self.keys and not self.allow_no_auth:
            raise ConfigError(
                "No API key configured: set APP_SECRET or AICHAT_API_KEYS "
                "(or pass --insecure-no-auth / AICHAT_ALLOW_NO_AUTH=1 to run without auth)."
            )


# Environment variable -> (field, description). Order is the README's table order.
ENV_VARS: dict[str, tuple[str, str]] = {
    "AICHAT_HOST": ("host", "Address to listen on."),
    "AICHAT_PORT": ("port", "Port to listen on."),
    "AICHAT_WORKERS": ("workers", "Processes serving the port (`SO_REUSEPORT`) as one gateway."),
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
    "AICHAT_TOTAL_TIMEOUT": (
        "total_timeout",
        "Longest time one upstream attempt may take, first byte to last (0: none); 504.",
    ),
    "AICHAT_MAX_LINE_BYTES": (
        "max_line_bytes",
        "Longest line an upstream stream may send (502 `upstream_error` beyond).",
    ),
    "AICHAT_MAX_ANSWER_BYTES": (
        "max_answer_bytes",
        "Largest whole (non-streamed) upstream answer (502 `upstream_error` beyond).",
    ),
    "AICHAT_RETRIES": ("retries", "Retries of a failing upstream before its fallbacks."),
    "AICHAT_RETRY_BACKOFF": ("retry_backoff", "First retry delay in seconds; doubles, jittered."),
    "AICHAT_RETRY_MAX_WAIT": (
        "retry_max_wait",
        "Longest wait before a retry; a longer Retry-After skips to fallbacks.",
    ),
    "AICHAT_RATE_LIMIT_RPM": (
        "rate_limit_rpm",
        "Requests per minute per key (0: unlimited); `[[keys]]` may set their own.",
    ),
    "AICHAT_MAX_CONCURRENT_PER_KEY": (
        "max_concurrent_per_key",
        "Open streams and in-flight requests per key (0: unlimited).",
    ),
    "AICHAT_MAX_CONCURRENT": ("max_concurrent", "In-flight upstream requests, all keys together."),
    "AICHAT_QUEUE_TIMEOUT": (
        "queue_timeout",
        "Seconds a request may wait for a free slot before 503 `server_overloaded`.",
    ),
    "AICHAT_MAX_LOOP_LAG": (
        "max_loop_lag",
        "Seconds the event loop may run late (smoothed) before new requests get 503 (0: never).",
    ),
    "REDIS_URL": ("redis_url", "Keep rate-limit counters in Redis, shared by replicas."),
    "AICHAT_REDIS_PREFIX": ("redis_prefix", "Prefix of every Redis key aichat writes."),
    "AICHAT_REDIS_FAILURE": (
        "redis_failure",
        "When Redis is down: `open` (allow, log a warning) or `closed` (503).",
    ),
    "AICHAT_REDIS_MAX_CONNECTIONS": (
        "redis_max_connections",
        "Redis connections per process; more requests wait up to AICHAT_QUEUE_TIMEOUT.",
    ),
    "AICHAT_BREAKER_FAILURES": (
        "breaker_failures",
        "Consecutive failed requests (after their retries) that open a circuit (0: never).",
    ),
    "AICHAT_BREAKER_COOLDOWN": ("breaker_cooldown", "Seconds an open circuit waits for a trial."),
    "AICHAT_DRAIN_TIMEOUT": (
        "drain_timeout",
        "Seconds in-flight requests get to finish on SIGTERM before they end with an error.",
    ),
    "AICHAT_METRICS_KEY": ("metrics_key", "If set, `GET /metrics` needs this bearer key."),
    "AICHAT_ADMIN_KEY": (
        "admin_key",
        "Bearer key of the usage page's data (`/usage/api`); unset, it is not served.",
    ),
    "AICHAT_USAGE_DB": ("usage_db", "SQLite file of the usage history (without DATABASE_URL)."),
    "DATABASE_URL": ("database_url", "PostgreSQL URL of the usage history, shared by replicas."),
    "AICHAT_MAX_BODY_BYTES": ("max_body_bytes", "Largest accepted request body (413 beyond)."),
    "AICHAT_BODY_TIMEOUT": ("body_timeout", "Seconds a client may take to send its body (408)."),
    "AICHAT_HEADER_TIMEOUT": (
        "header_timeout",
        "Seconds a client may take to send a request head; the connection is closed after.",
    ),
    "AICHAT_KEEPALIVE_TIMEOUT": (
        "keepalive_timeout",
        "Seconds an idle keep-alive connection stays open.",
    ),
    "AICHAT_PLAYGROUND": ("playground", "`0` turns off the playground page at `/`."),
    "AICHAT_LOG_FORMAT": ("log_format", "`text` or `json`."),
    "AICHAT_LOG_LEVEL": ("log_level", "`DEBUG`, `INFO`, `WARNING` or `ERROR`."),
    "AICHAT_PID_FILE": (
        "pid_file",
        "Where `aichat serve` writes its PID and `aichat reload` reads it.",
    ),
}

_LIST_FIELDS = {"models", "api_keys", "cors_origins"}
_BOOL_FIELDS = {"allow_no_auth", "playground"}
_BOOLEANS = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(
    ("0", "false", "no", "off"), False
)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _raw_values(env: Mapping[str, str | None]) -> dict[str, Any]:
    """Map environment variables onto field values, still as strings or lists of strings."""
    raw: dict[str, Any] = {}
    for var, (field, _) in ENV_VARS.items():
        value = env.get(var)
        if value is None or not value.strip():
            continue
        if field in _LIST_FIELDS:
            raw.setdefault(field, []).extend(_split(value))
        elif field in _BOOL_FIELDS:
            raw[field] = _boolean(var, value)
        else:
            raw[field] = value.strip()
    return raw


def _boolean(var: str, value: str) -> bool:
    parsed = _BOOLEANS.get(value.strip().lower())
    if parsed is None:
        raise ConfigError(
            f"Invalid configuration: {var}: {value.strip()[:40]!r} is not a boolean "
            "(use 1/0, true/false, yes/no or on/off)"
        )
    return parsed


def _variable_for(field: str) -> str:
    names = [var for var, (f, _) in ENV_VARS.items() if f == field]
    return " / ".join(names) if names else field


def _toml_location(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """``[[models]] #2 (name = "x") key`` for a pydantic error location in the file."""
    if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
        tables = data.get(loc[0])
        table = tables[loc[1]] if isinstance(tables, list) and loc[1] < len(tables) else None
        name = table.get("name") if isinstance(table, dict) else None
        where = f"[[{loc[0]}]] #{loc[1] + 1}" + (f' (name = "{name}")' if name else "")
        rest = ".".join(str(part) for part in loc[2:])
        return f"{where} {rest}".strip()
    return ".".join(str(part) for part in loc)


# A file of [[keys]] alone is the likely mistake: it still replaces AICHAT_MODELS.
_NO_MODELS = (
    "no [[models]] table: a config file replaces AICHAT_MODELS, so it must name every model "
    "clients may ask for, each in a [[models]] table with its name and provider (see the "
    "README, Models and providers)"
)


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[ModelConfig] = Field(min_length=1)
    keys: list[KeyConfig] = []


def load_config_file(
    path: Path, env: Mapping[str, str | None]
) -> tuple[tuple[ModelConfig, ...], tuple[KeyConfig, ...]]:
    """Read and check a config file's routes and keys; errors name file, table and key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(_unreadable(path, exc, "AICHAT_CONFIG / --config")) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        parsed = _ConfigFile.model_validate(data)
    except ValidationError as exc:
        invalid = [
            _NO_MODELS
            if tuple(err["loc"]) == ("models",) and err["type"] in ("missing", "too_short")
            else f"{_toml_location(tuple(err['loc']), data)}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise ConfigError(f"{path}: " + "; ".join(invalid)) from None
    problems: list[str] = []
    routes = _checked_routes(parsed.models, env, problems)
    keys = _checked_keys(parsed.keys, routes, env, problems)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return routes, keys


def _unreadable(path: Path, exc: OSError, named_by: str) -> str:
    return (
        f"{path}: cannot read: {exc.strerror or exc}: check the path and its permissions "
        f"({named_by})"
    )


def _duplicates(table: str, names: list[str]) -> list[str]:
    return [f'[[{table}]] "{n}" is defined twice' for n in sorted(set(names)) if names.count(n) > 1]


def _secret_from_env(
    where: str, field: str, var: str | None, env: Mapping[str, str | None], problems: list[str]
) -> SecretStr | None:
    if not var:
        return None
    value = env.get(var)
    if not value:
        problems.append(f"{where} {field}: {var} is not set")
        return None
    return SecretStr(value)


def _price_provider(name: str) -> bool:
    """Whether genai-prices has a provider of that id (``price = "openai"``)."""
    from genai_prices.data_snapshot import find_provider_by_id, get_snapshot

    return find_provider_by_id(get_snapshot().providers, name) is not None


def _checked_routes(
    routes: list[ModelConfig], env: Mapping[str, str | None], problems: list[str]
) -> tuple[ModelConfig, ...]:
    problems += _duplicates("models", [route.name for route in routes])
    names = [route.name for route in routes if not route.discovers]
    resolved = []
    for route in routes:
        where = f'[[models]] name = "{route.name}"'
        if route.discovers and route.provider != "openai":
            problems.append(f"{where} models: only an openai upstream can list its models")
        if route.prefix and not route.discovers:
            problems.append(f'{where} prefix: only with models = "discover"')
        problems += [
            f"{where} {field}: no model named {fallback!r}"
            for field, chain in (
                ("fallbacks", route.fallbacks),
                ("context_fallbacks", route.context_fallbacks),
            )
            for fallback in chain
            if fallback not in names or fallback == route.name
        ]
        if route.prompt_caching and route.provider != "anthropic":
            problems.append(f"{where} prompt_caching: only an anthropic upstream takes it")
        if route.provider == "openai" and route.base_url is None:
            problems.append(f"{where} base_url: required for provider 'openai'")
        if route.api != "chat" and route.provider != "openai":
            problems.append(f"{where} api: only an openai upstream speaks another API")
        if route.emulate_tools and route.provider in ("openai", "anthropic"):
            problems.append(
                f"{where} emulate_tools: {route.provider} upstreams call tools themselves"
            )
        if isinstance(route.price, str) and not _price_provider(route.price):
            problems.append(f"{where} price: genai-prices knows no provider {route.price!r}")
        if route.api_key is not None:
            problems.append(
                f"{where} api_key: put the key in the environment, name it in api_key_env"
            )
        # Unset: no key is sent (Settings.warnings says so); local servers need none.
        key = env.get(route.api_key_env) if route.api_key_env else None
        resolved.append(route.model_copy(update={"api_key": SecretStr(key) if key else None}))
    return tuple(resolved)


def _checked_keys(
    keys: list[KeyConfig],
    routes: tuple[ModelConfig, ...],
    env: Mapping[str, str | None],
    problems: list[str],
) -> tuple[KeyConfig, ...]:
    problems += _duplicates("keys", [key.name for key in keys])
    models = {route.name for route in routes if not route.discovers}
    # Discovered names are known only once listed: any name under a discovery prefix may be.
    prefixes = tuple(route.prefix for route in routes if route.discovers)
    resolved = []
    for key in keys:
        where = f'[[keys]] name = "{key.name}"'
        if key.key is not None:
            problems.append(f"{where} key: store key_sha256, or name a variable in key_env")
        if (key.key_sha256 is None) == (key.key_env is None):
            problems.append(f"{where}: give exactly one of key_sha256 and key_env")
        problems += [
            f"{where} models: no model named {model!r}"
            for model in key.models or ()
            if model not in models and not model.startswith(prefixes)
        ]
        secret = _secret_from_env(where, "key_env", key.key_env, env, problems)
        resolved.append(key.model_copy(update={"key": secret}))
    return tuple(resolved)


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    dotenv_path: str | Path | None = ".env",
    overrides: Mapping[str, Any] | None = None,
    dotenv_required: bool = False,
    read_config_file: bool = True,
) -> Settings:
    """Build Settings from ``.env`` < ``env`` < ``overrides``; raise ConfigError on bad values.

    A missing ``dotenv_path`` is skipped, unless ``dotenv_required`` (the user named it).
    Without ``read_config_file`` the config file is not read: its routes and keys stay empty.
    """
    merged: dict[str, str | None] = {}
    if dotenv_path is not None and (dotenv_required or Path(dotenv_path).exists()):
        try:
            with open(dotenv_path, encoding="utf-8") as stream:
                merged.update(dotenv_values(stream=stream))
        except (OSError, UnicodeDecodeError) as exc:
            error = exc if isinstance(exc, OSError) else OSError(0, "not UTF-8 text")
            raise ConfigError(_unreadable(Path(dotenv_path), error, "--env-file")) from None
    merged.update(os.environ if env is None else env)
    raw = _raw_values(merged)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if read_config_file and raw.get("config_file"):
        raw["routes"], raw["keys"] = load_config_file(Path(raw["config_file"]), merged)
    try:
        return Settings(**raw)
    except ValidationError as exc:
        problems = [
            f"{_variable_for(str(err['loc'][0]))}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        ]
        raise ConfigError("Invalid configuration: " + "; ".join(problems)) from None
