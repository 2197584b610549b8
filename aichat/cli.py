"""The ``aichat`` command: ``serve``, ``reload``, ``config show``, ``usage`` and ``agent-env``.

Help texts are plain text (argparse prints them as they are). Global options (``--env-file``)
are accepted before or after the subcommand. Every start-up failure is one line on stderr
naming the cause and the fix, with a non-zero exit status: 2 for configuration, 1 for the
rest (a port in use, say).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from aichat import __version__
from aichat.agent_env import AGENTS, agent_env
from aichat.core.config import ConfigError, Settings, StartupError, load_settings
from aichat.operations.logs import configure_logging
from aichat.operations.pidfile import NotRunning, pid_file, pid_path, signal_reload
from aichat.operations.usage_report import GROUPS
from aichat.usage_cli import parse_day, print_usage
from aichat.workers import run

log = logging.getLogger("aichat")

DESCRIPTION = (
    "aichat: an OpenAI-compatible gateway. 'aichat serve' runs it; 'aichat config show' prints "
    "the configuration in effect, keys redacted. Settings come from flags, environment "
    "variables and a .env file, in that order of precedence."
)
ENV_FILE_HELP = "dotenv file to read (default: .env in the working directory, if there is one)"
PID_FILE_HELP = (
    "the gateway's PID file (AICHAT_PID_FILE; default: aichat-<port>.pid in $TMPDIR or /tmp)"
)
SERVE_EPILOG = (
    "Signals: SIGHUP reloads the env file and the config file (models, keys, limits, budgets) "
    "without dropping a request; 'aichat reload' sends it, finding the gateway through its PID "
    "file. SIGTERM or SIGINT drains the requests in flight, then stops."
)


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--env-file", default=default, help=ENV_FILE_HELP)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aichat", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"aichat {__version__}")
    _global_options(parser, None)
    # The same options after the subcommand; SUPPRESS keeps an absent one from overwriting
    # the value given before it.
    late = argparse.ArgumentParser(add_help=False)
    _global_options(late, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, description: str, **more: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, parents=[late], help=summary, description=description, **more
        )
        return parser

    serve = command("serve", "run the gateway", "Run the gateway.", epilog=SERVE_EPILOG)
    serve.add_argument("--config", dest="config_file", help="TOML routes file (AICHAT_CONFIG)")
    serve.add_argument("--host", help="listen address (AICHAT_HOST)")
    serve.add_argument("--port", type=int, help="listen port (AICHAT_PORT)")
    serve.add_argument("--workers", type=int, help="processes on the port (AICHAT_WORKERS)")
    serve.add_argument("--aichats-base-url", help="aichats upstream URL (AICHATS_BASE_URL)")
    serve.add_argument("--models", help="comma-separated model names (AICHAT_MODELS)")
    serve.add_argument("--connect-timeout", type=float, help="seconds (AICHAT_CONNECT_TIMEOUT)")
    serve.add_argument(
        "--first-byte-timeout", type=float, help="seconds (AICHAT_FIRST_BYTE_TIMEOUT)"
    )
    serve.add_argument("--idle-timeout", type=float, help="seconds (AICHAT_IDLE_TIMEOUT)")
    serve.add_argument("--log-format", choices=["text", "json"], help="(AICHAT_LOG_FORMAT)")
    serve.add_argument("--pid-file", help=PID_FILE_HELP)
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=None,
        dest="allow_no_auth",
        help="run without API keys (AICHAT_ALLOW_NO_AUTH=1)",
    )

    reload = command(
        "reload",
        "make the running gateway reload its configuration",
        "Send SIGHUP to the gateway running with this port (or PID file): it re-reads its env "
        "file and config file, and its log says whether it took them.",
    )
    reload.add_argument("--port", type=int, help="the gateway's port (AICHAT_PORT)")
    reload.add_argument("--pid-file", help=PID_FILE_HELP)

    config = command(
        "config",
        "inspect configuration",
        "Print the configuration in effect as JSON, every key redacted.",
    )
    config.add_argument("action", choices=["show"], help="print the effective config, redacted")
    config.add_argument("--config", dest="config_file", help="TOML routes file (AICHAT_CONFIG)")
    usage = command(
        "usage",
        "requests, tokens and spend from the usage history",
        "Print requests, tokens and spend per key, model or upstream from the usage "
        "history (AICHAT_USAGE_DB, or DATABASE_URL), over UTC days.",
    )
    usage.add_argument("--config", dest="config_file", help="TOML routes file (AICHAT_CONFIG)")
    usage.add_argument("--since", type=parse_day, help="first day, YYYY-MM-DD (default: the 1st)")
    usage.add_argument("--until", type=parse_day, help="last day, YYYY-MM-DD (default: today)")
    usage.add_argument("--by", choices=GROUPS, default="key", help="one line per (default: key)")
    formats = usage.add_mutually_exclusive_group()
    formats.add_argument(
        "--json", dest="output", action="store_const", const="json", help="one JSON object a line"
    )
    formats.add_argument("--csv", dest="output", action="store_const", const="csv", help="CSV")
    agent = command(
        "agent-env",
        "settings for a coding agent to use a model through aichat",
        "Print the environment lines (claude) or the config.toml (codex) that point "
        "a coding agent at a model of the running gateway, its context window included.",
    )
    agent.add_argument("agent", choices=AGENTS, help="Claude Code or the Codex CLI")
    agent.add_argument("model", help="a model name the gateway serves")
    agent.add_argument("--url", help="the gateway as the agent reaches it (default: its port here)")
    agent.add_argument("--key", help="a client key to ask it with (default: APP_SECRET)")
    agent.add_argument("--config", dest="config_file", help="TOML routes file (AICHAT_CONFIG)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = set(Settings.model_fields)
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if "models" in values:
        values["models"] = [m.strip() for m in values["models"].split(",") if m.strip()]
    return values


def effective_config(settings: Settings) -> dict[str, Any]:
    """The settings as they act: every route served, and no model list a config file replaced.

    ``SecretStr`` fields dump as ``'**********'``: the keys themselves are never shown.
    """
    shown = settings.model_dump(mode="json")
    shown["routes"] = [route.model_dump(mode="json") for route in settings.model_routes]
    if settings.routes:
        del shown["models"]  # AICHAT_MODELS is not in effect when a config file routes
    return shown


def _settings(args: argparse.Namespace, read_config_file: bool = True) -> Settings:
    """The settings from the flags, the environment and the env file; again on a reload."""
    return load_settings(
        dotenv_path=args.env_file or ".env",
        overrides=_overrides(args),
        dotenv_required=args.env_file is not None,
        read_config_file=read_config_file,
    )


def _reload(args: argparse.Namespace) -> int:
    """``aichat reload``: SIGHUP to the gateway its PID file names.

    The config file is not read here: the gateway reads it, with its own environment, and
    says in its log whether it took it.
    """
    path = pid_path(_settings(args, read_config_file=False))
    try:
        pid = signal_reload(path)
    except NotRunning as exc:
        print(f"aichat: {exc}", file=sys.stderr)
        return 1
    print(f"aichat: sent SIGHUP to the gateway (pid {pid}, {path}); its log says what it loaded")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "reload":
            return _reload(args)
        settings = _settings(args)
        if args.command == "config":
            for warning in settings.warnings():
                print(f"aichat: warning: {warning}", file=sys.stderr)
            print(json.dumps(effective_config(settings), indent=2))
            return 0
        if args.command == "usage":
            print_usage(
                settings, sys.stdout, args.since, args.until, args.by, args.output or "table"
            )
            return 0
        if args.command == "agent-env":
            text, note = agent_env(settings, args.agent, args.model, args.url, args.key)
            if note:
                print(f"aichat: note: {note}", file=sys.stderr)
            sys.stdout.write(text)
            return 0
        settings.require_auth_decision()
        configure_logging(settings.log_format, settings.log_level)
        for warning in settings.warnings():
            log.warning(warning)
        with pid_file(pid_path(settings)):
            return run(settings, lambda: _settings(args))
    except StartupError as exc:
        print(f"aichat: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
