"""The gateways under test: aichat (from this tree or another) and, optionally, LiteLLM.

Each is started on the gateway core, pointed at the same fake upstream, and serves:

- ``bench-aichats``: the aichats provider (translation into OpenAI chunks);
- ``bench-openai``: OpenAI pass-through to the fake upstream's ``/v1`` (aichat only when its
  OpenAI provider is present; LiteLLM serves only this one);
- for the coding agents' scenarios (``bench.agents``), ``bench-openai`` again (where aichat
  translates), ``bench-anthropic`` (an ``anthropic`` route) and ``bench-responses`` (an
  ``openai`` route with ``api = "responses"``), all to the same fake upstream.

aichat runs with one provider's route per process, as a deployment that needs only that
one would: its memory at rest is then what such a configuration costs (an OpenAI-only
gateway never loads the tokenizer). It runs at its default settings (access log at INFO,
written to a file; Server-Timing; limits in memory) unless ``muted``, which turns the access
log off for comparison, or ``traced``, which exports a trace of every request (the fake
upstream takes the spans).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import procstats
from bench.agents import AGENTS, ANTHROPIC_ROUTE, RESPONSES_ROUTE
from bench.procs import GATEWAY_CORE, Cores, Proc, free_port, start, wait_http

CLIENT_KEY = "sk-bench-client-key"
UPSTREAM_KEY = "sk-bench-upstream-key"
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"
AICHATS_MODEL = "bench-aichats"
OPENAI_MODEL = "bench-openai"
UPSTREAM_MODEL = "bench-upstream"
LITELLM_VENV = Path(__file__).parent / ".venv-litellm"


MODES = ("stream", "whole")


class NotMeasured(RuntimeError):
    """A gateway that runs but not as the row asks (the message says why): skipped."""


@dataclass
class Gateway:
    """A running gateway, the provider scenarios it can serve, and its memory once started."""

    name: str
    proc: Proc
    providers: tuple[str, ...]
    modes: tuple[str, ...] = MODES
    rest_rss_mb: float | None = None

    def __post_init__(self) -> None:
        # Read once it answers, before any API request: what the configuration costs idle.
        self.rest_rss_mb = round(procstats.rss_bytes(self.proc.pid) / 2**20, 1)


def _gateway_env(pythonpath: str | None) -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1"}
    if pythonpath:
        # A copy of the package (profiling experiments) shadows the installed one.
        paths = [pythonpath, os.environ.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    return env


def has_openai_provider(pythonpath: str | None) -> bool:
    """Whether the aichat under test has the OpenAI pass-through provider (issue 3)."""
    probe = subprocess.run(
        [sys.executable, "-c", "import aichat.providers.openai"],
        env={**os.environ, **_gateway_env(pythonpath)},
        capture_output=True,
        check=False,
        cwd="/",
    )
    return probe.returncode == 0


def aichat_config(upstream_url: str, agents: bool = False) -> str:
    """The TOML routing config of the OpenAI pass-through route, and with ``agents`` the
    native Messages and Responses routes too."""
    config = f"""# Written by bench/gateways.py for one benchmark run.
[[models]]
name = "{OPENAI_MODEL}"
provider = "openai"
base_url = "{upstream_url}/v1"
upstream_model = "{UPSTREAM_MODEL}"
api_key_env = "{UPSTREAM_KEY_ENV}"
"""
    if agents:
        config += f"""
[[models]]
name = "{ANTHROPIC_ROUTE}"
provider = "anthropic"
base_url = "{upstream_url}"
upstream_model = "{UPSTREAM_MODEL}"
api_key_env = "{UPSTREAM_KEY_ENV}"

[[models]]
name = "{RESPONSES_ROUTE}"
provider = "openai"
api = "responses"
base_url = "{upstream_url}/v1"
upstream_model = "{UPSTREAM_MODEL}"
api_key_env = "{UPSTREAM_KEY_ENV}"
"""
    return config


@dataclass(frozen=True)
class AichatOptions:
    """How one aichat gateway of the run is started."""

    provider: str  # its only route, "aichats" or "openai", or an agent scenario's routes
    pythonpath: str | None = None
    muted: bool = False  # access log off (AICHAT_LOG_LEVEL=WARNING)
    traced: bool = False  # every request traced, spans exported to the fake upstream
    workers: int = 1
    cores: Cores = GATEWAY_CORE
    launcher: tuple[str, ...] = ()  # a command the gateway runs under (bench.instructions)

    @property
    def name(self) -> str:
        """The gateway's name in the results."""
        if self.workers > 1 or self.cores != GATEWAY_CORE:
            return f"aichat-w{self.workers}"
        if self.traced:
            return "aichat-traced"
        return "aichat-muted" if self.muted else "aichat"


def start_aichat(upstream_url: str, work: Path, options: AichatOptions) -> Gateway | None:
    """``aichat serve`` serving ``options.provider``, on the gateway core (or ``cores``);
    None when the aichat under test has no such provider."""
    port = free_port()
    env = {
        **_gateway_env(options.pythonpath),
        "APP_SECRET": CLIENT_KEY,
        "AICHAT_HOST": "127.0.0.1",
        "AICHAT_PORT": str(port),
        # Room for the 1,000 held streams (the default cap of in-flight upstream calls is
        # lower); shedding load is not what is measured here.
        "AICHAT_MAX_CONCURRENT": "4096",
    }
    if options.muted:
        env["AICHAT_LOG_LEVEL"] = "WARNING"
    if options.traced:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=upstream_url, OTEL_TRACES_SAMPLER="always_on")
    if options.workers > 1:
        env["AICHAT_WORKERS"] = str(options.workers)
    if options.provider == "aichats":
        env.update(AICHATS_BASE_URL=upstream_url, AICHAT_MODELS=AICHATS_MODEL)
    elif has_openai_provider(options.pythonpath):
        config = work / f"aichat-{options.provider}.toml"
        config.write_text(aichat_config(upstream_url, agents=options.provider in AGENTS))
        env.update(AICHAT_CONFIG=str(config), **{UPSTREAM_KEY_ENV: UPSTREAM_KEY})
    else:
        return None
    # An empty env file: a developer's .env in the working tree must not change the run.
    empty = work / "empty.env"
    empty.touch()
    cmd = [*options.launcher, sys.executable, "-m", "aichat", "--env-file", str(empty), "serve"]
    url = f"http://127.0.0.1:{port}"
    # Started outside the source tree: ``-m`` puts the working directory first on sys.path,
    # which would shadow ``pythonpath``. The access log goes to the log file, as to a
    # journal or a file in production.
    proc = start(options.name, cmd, core=options.cores, url=url, log_dir=work, env=env, cwd=work)
    wait_http(proc, "/ready", 300 if options.launcher else 30)
    return Gateway(options.name, proc, (options.provider,))


# The bare proxies run for scale: ``bench.floor`` (aiohttp alone) and ``bench.hop`` (the
# network hop alone, OpenAI streams only), with the providers and modes they serve.
BARE_PROXIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "floor": (("aichats", "openai"), MODES),
    "hop": (("openai",), ("stream",)),
}


def start_bare_proxy(
    name: str, upstream_url: str, work: Path, launcher: tuple[str, ...] = ()
) -> Gateway:
    """``bench.<name>`` (one of ``BARE_PROXIES``) on the gateway core (under ``launcher``)."""
    port = free_port()
    cmd = [*launcher, sys.executable, "-m", f"bench.{name}", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    root = Path(__file__).parent.parent
    proc = start(
        name, [*cmd, "--upstream", upstream_url], core=GATEWAY_CORE, url=url, log_dir=work, cwd=root
    )
    wait_http(proc, "/ready", 300 if launcher else 30)
    providers, modes = BARE_PROXIES[name]
    return Gateway(name, proc, providers, modes)


def litellm_available() -> bool:
    """Whether ``make bench-peers`` installed LiteLLM's proxy."""
    return (LITELLM_VENV / "bin" / "litellm").is_file()


def litellm_version() -> str | None:
    """The installed LiteLLM's version, from its package metadata in the peer venv."""
    found = sorted(LITELLM_VENV.glob("lib/python*/site-packages/litellm-*.dist-info"))
    return found[-1].name.removeprefix("litellm-").removesuffix(".dist-info") if found else None


def start_litellm(upstream_url: str, work: Path, rust: bool = False) -> Gateway:
    """LiteLLM's proxy with its defaults, one model routed to the fake OpenAI upstream.

    ``rust``: the deployment opts into LiteLLM's Rust request path (``rust: true``, and
    ``LITELLM_RUST=1``). Releases that still answer chat completions in Python (no
    ``x-litellm-rust: true`` header on the answer) are stopped and reported, not measured
    as a Rust row.
    """
    name = "litellm-rust" if rust else "litellm"
    port = free_port()
    config = work / f"{name}.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {OPENAI_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{UPSTREAM_MODEL}\n"
        f"      api_base: {upstream_url}/v1\n"
        f"      api_key: {UPSTREAM_KEY}\n"
        + ("      rust: true\n" if rust else "")
        + "general_settings:\n"
        f"  master_key: {CLIENT_KEY}\n"
    )
    env = {
        # Offline: use the bundled model price map instead of fetching it at start.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        **({"LITELLM_RUST": "1"} if rust else {}),
    }
    cmd = [
        str(LITELLM_VENV / "bin" / "litellm"),
        *("--config", str(config), "--host", "127.0.0.1", "--port", str(port)),
    ]
    proc = start(
        name, cmd, core=GATEWAY_CORE, url=f"http://127.0.0.1:{port}", log_dir=work, env=env
    )
    wait_http(proc, "/health/liveliness", 120)
    if rust and not _answered_by_rust(proc.url):
        proc.stop()
        raise NotMeasured(
            f"LiteLLM {litellm_version()} answers chat completions in Python even with "
            "rust: true (no x-litellm-rust header)"
        )
    return Gateway(name, proc, ("openai",))


def _answered_by_rust(url: str) -> bool:
    """Whether LiteLLM marks its answer to one chat completion as made by its Rust path."""
    body = {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "bench chunks=2"}]}
    request = urllib.request.Request(  # noqa: S310 (the proxy on 127.0.0.1 started above)
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (same)
        return bool(answer.headers.get("x-litellm-rust") == "true")
