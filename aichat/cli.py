"""The ``aichat`` command: ``aichat serve``, ``aichat config show`` and ``aichat usage``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from aichat import __version__
from aichat.config import ConfigError, Settings, load_settings
from aichat.logs import configure_logging
from aichat.server import serve
from aichat.usage_cli import print_usage


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aichat", description=__doc__)
    parser.add_argument("--version", action="version", version=f"aichat {__version__}")
    parser.add_argument("--env-file", default=".env", help="dotenv file to read (default: .env)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", dest="config_file", help="TOML routes file (AICHAT_CONFIG)")
    serve.add_argument("--host", help="listen address (AICHAT_HOST)")
    serve.add_argument("--port", type=int, help="listen port (AICHAT_PORT)")
    serve.add_argument("--aichats-base-url", help="aichats upstream URL (AICHATS_BASE_URL)")
    serve.add_argument("--models", help="comma-separated model names (AICHAT_MODELS)")
    serve.add_argument("--connect-timeout", type=float, help="seconds (AICHAT_CONNECT_TIMEOUT)")
    serve.add_argument(
        "--first-byte-timeout", type=float, help="seconds (AICHAT_FIRST_BYTE_TIMEOUT)"
    )
    serve.add_argument("--idle-timeout", type=float, help="seconds (AICHAT_IDLE_TIMEOUT)")
    serve.add_argument("--log-format", choices=["text", "json"], help="(AICHAT_LOG_FORMAT)")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=None,
        dest="allow_no_auth",
        help="run without API keys (AICHAT_ALLOW_NO_AUTH=1)",
    )

    config = commands.add_parser("config", help="inspect configuration")
    config.add_argument("action", choices=["show"], help="print the effective config, redacted")
    config.add_argument("--config", dest="config_file", help="TOML routes file (AICHAT_CONFIG)")
    usage = commands.add_parser("usage", help="tokens per key and model, today and this month")
    usage.add_argument("--config", dest="config_file", help="TOML routes file (AICHAT_CONFIG)")
    usage.add_argument("--json", action="store_true", help="one JSON object per key and model")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = set(Settings.model_fields)
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if "models" in values:
        values["models"] = [m.strip() for m in values["models"].split(",") if m.strip()]
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(dotenv_path=args.env_file, overrides=_overrides(args))
        if args.command == "config":
            # SecretStr fields dump as '**********': the keys themselves are never printed.
            print(json.dumps(settings.model_dump(mode="json"), indent=2))
            return 0
        if args.command == "usage":
            print_usage(settings, sys.stdout, args.json)
            return 0
        settings.require_auth_decision()
    except ConfigError as exc:
        print(f"aichat: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    serve(settings, lambda: load_settings(dotenv_path=args.env_file, overrides=_overrides(args)))
    return 0
