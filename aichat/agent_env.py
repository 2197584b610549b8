"""``aichat agent-env claude|codex MODEL``: what a coding agent needs to use MODEL through aichat.

Decisions:

- The running gateway is asked (``GET /v1/models/MODEL``), not the config file: it is the one
  that knows discovered models and what their upstreams said of their windows, and asking it
  proves the model is served. Its address is the one ``aichat serve`` listens on (a wildcard
  listen address is asked on loopback) unless ``--url`` names the one agents should use; the
  key is ``--key``, else the first of APP_SECRET / AICHAT_API_KEYS.
- Claude Code gets ``export`` lines, to ``eval`` or paste; the key line names ``$APP_SECRET``
  and never holds a key. The window goes in ``CLAUDE_CODE_MAX_CONTEXT_TOKENS``, the window
  Claude Code believes for a model name it does not know itself (measured in the pinned
  release: it ignores the variable for names it knows); ``CLAUDE_CODE_AUTO_COMPACT_WINDOW``,
  which also lowers the window of a name it knows, only from 100,000 tokens on, as Claude
  Code raises a smaller one to 100,000 and warns.
- The Codex CLI gets a ``config.toml``: aichat as a Responses provider whose model catalog is
  aichat's ``/v1/models`` (``aichat.inbound.codex_catalog``), which needs the
  ``api_key_model_discovery`` feature; the window also as ``model_context_window``, which
  releases without catalog support read.
- A model whose window nobody stated gets everything but the window, and a note on stderr.
  It stays in the Codex catalog all the same: no warning, and no window Codex could act on.
"""

from __future__ import annotations

import json
import shlex
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

from aichat.core.config import ConfigError, Settings
from aichat.healthcheck import health_url

Agent = Literal["claude", "codex"]
AGENTS: tuple[Agent, ...] = ("claude", "codex")
ASK_TIMEOUT = 10.0  # seconds
CLAUDE_MIN_AUTO_COMPACT = 100_000  # Claude Code's smallest auto-compact window


@dataclass(frozen=True)
class Served:
    """A model as the gateway serves it."""

    name: str
    context_window: int | None


def default_url(settings: Settings) -> str:
    """Where ``aichat serve`` with ``settings`` answers on this machine."""
    where = {"AICHAT_HOST": settings.host, "AICHAT_PORT": str(settings.port)}
    return health_url(where).removesuffix("/health")


def ask_gateway(url: str, model: str, key: str | None) -> Served:
    """``model`` as the gateway at ``url`` serves it; ``ConfigError`` saying why not."""
    address = f"{url}/v1/models/{urllib.parse.quote(model, safe='')}"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # The gateway is named by the user: no HTTP proxy from the environment in between.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        request = urllib.request.Request(address, headers=headers)  # noqa: S310 (http(s) URL)
        with opener.open(request, timeout=ASK_TIMEOUT) as answer:
            found: dict[str, Any] = json.loads(answer.read(1024 * 1024))
    except urllib.error.HTTPError as exc:
        why = {401: "the key was refused (give --key)", 404: f"it serves no model {model!r}"}
        raise ConfigError(f"{url}: {why.get(exc.code, f'HTTP {exc.code}')}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"no aichat answers at {url} ({exc}): start it (aichat serve), or give --url"
        ) from None
    window = found.get("context_window")
    return Served(model, window if isinstance(window, int) else None)


def claude_lines(url: str, served: Served) -> list[str]:
    """The environment lines of Claude Code for ``served`` at ``url``."""
    name = shlex.quote(served.name)
    lines = [
        f"export ANTHROPIC_BASE_URL={shlex.quote(url)}",
        'export ANTHROPIC_API_KEY="$APP_SECRET"',
        *(
            f"export {variable}={name}"
            for variable in (
                "ANTHROPIC_MODEL",
                "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                "ANTHROPIC_DEFAULT_SONNET_MODEL",
                "ANTHROPIC_DEFAULT_OPUS_MODEL",
            )
        ),
        "export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
    ]
    window = served.context_window
    if window is not None:
        lines.append(f"export CLAUDE_CODE_MAX_CONTEXT_TOKENS={window}")
        if window >= CLAUDE_MIN_AUTO_COMPACT:
            lines.append(f"export CLAUDE_CODE_AUTO_COMPACT_WINDOW={window}")
    return lines


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string


def codex_lines(url: str, served: Served) -> list[str]:
    """The ``config.toml`` of the Codex CLI for ``served`` at ``url``."""
    window = served.context_window
    return [
        f"model = {_toml(served.name)}",
        'model_provider = "aichat"',
        *([f"model_context_window = {window}"] if window is not None else []),
        "check_for_update_on_startup = false",
        "",
        "[model_providers.aichat]",
        'name = "aichat"',
        f"base_url = {_toml(url + '/v1')}",
        'env_key = "AICHAT_API_KEY"',
        'wire_api = "responses"',
        f"model_catalog_url = {_toml(url + '/v1/models')}",
        "",
        "[features]",
        "api_key_model_discovery = true",
        "",
        "[analytics]",
        "enabled = false",
    ]


def agent_env(
    settings: Settings, agent: Agent, model: str, url: str | None, key: str | None
) -> tuple[str, str | None]:
    """What to print for ``agent`` using ``model``, and a note for stderr if there is one."""
    url = (url or default_url(settings)).rstrip("/")
    if key is None and settings.api_keys:
        key = settings.api_keys[0].get_secret_value()
    served = ask_gateway(url, model, key)
    lines = claude_lines(url, served) if agent == "claude" else codex_lines(url, served)
    note = None
    if served.context_window is None:
        note = f"no context window is known for {model} (set context_window on its route)"
    return "\n".join(lines) + "\n", note
