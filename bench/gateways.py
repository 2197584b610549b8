"""The gateways under test: aichat (from this tree or another) and, optionally, LiteLLM.

Each is started on the gateway core, pointed at the same fake upstream, and serves:

- ``bench-aichats``: the aichats provider (translation into OpenAI chunks);
- ``bench-openai``: OpenAI pass-through to the fake upstream's ``/v1`` (aichat only when its
  OpenAI provider is present; LiteLLM serves only this one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.procs import GATEWAY_CORE, Proc, free_port, start, wait_http

CLIENT_KEY = "sk-bench-client-key"
UPSTREAM_KEY = "sk-bench-upstream-key"
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"
AICHATS_MODEL = "bench-aichats"
OPENAI_MODEL = "bench-openai"
UPSTREAM_MODEL = "bench-upstream"
LITELLM_VENV = Path(__file__).parent / ".venv-litellm"


@dataclass
class Gateway:
    """A running gateway and the provider scenarios it can serve."""

    name: str
    proc: Proc
    providers: tuple[str, ...]


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


def aichat_config(upstream_url: str) -> str:
    """The TOML routing config: one aichats route and one OpenAI pass-through route."""
    return f"""# Written by bench/gateways.py for one benchmark run.
[[models]]
name = "{AICHATS_MODEL}"
provider = "aichats"
base_url = "{upstream_url}"

[[models]]
name = "{OPENAI_MODEL}"
provider = "openai"
base_url = "{upstream_url}/v1"
upstream_model = "{UPSTREAM_MODEL}"
api_key_env = "{UPSTREAM_KEY_ENV}"
"""


def start_aichat(upstream_url: str, work: Path, pythonpath: str | None = None) -> Gateway:
    """``aichat serve`` on the gateway core, access lines muted, keys and routes set."""
    port = free_port()
    env = {
        **_gateway_env(pythonpath),
        "APP_SECRET": CLIENT_KEY,
        "AICHATS_BASE_URL": upstream_url,
        "AICHAT_MODELS": AICHATS_MODEL,
        "AICHAT_LOG_LEVEL": "WARNING",
        "AICHAT_HOST": "127.0.0.1",
        "AICHAT_PORT": str(port),
        # Room for the 1,000 held streams (the default cap of in-flight upstream calls is
        # lower); shedding load is not what is measured here.
        "AICHAT_MAX_CONCURRENT": "4096",
    }
    providers: tuple[str, ...] = ("aichats",)
    if has_openai_provider(pythonpath):
        config = work / "aichat.toml"
        config.write_text(aichat_config(upstream_url))
        env["AICHAT_CONFIG"] = str(config)
        env[UPSTREAM_KEY_ENV] = UPSTREAM_KEY
        providers = ("aichats", "openai")
    # A missing env file: a developer's .env in the working tree must not change the run.
    cmd = [sys.executable, "-m", "aichat", "--env-file", str(work / "none.env"), "serve"]
    url = f"http://127.0.0.1:{port}"
    # Started outside the source tree: ``-m`` puts the working directory first on sys.path,
    # which would shadow ``pythonpath``.
    proc = start("aichat", cmd, core=GATEWAY_CORE, url=url, log_dir=work, env=env, cwd=work)
    wait_http(proc, "/ready", 30)
    return Gateway("aichat", proc, providers)


# The bare proxies run for scale, stream scenarios only: ``bench.floor`` (aiohttp alone)
# and ``bench.hop`` (the network hop alone, OpenAI pass-through only), with what they serve.
BARE_PROXIES: dict[str, tuple[str, ...]] = {"floor": ("aichats", "openai"), "hop": ("openai",)}


def start_bare_proxy(name: str, upstream_url: str, work: Path) -> Gateway:
    """``bench.<name>`` (one of ``BARE_PROXIES``) on the gateway core."""
    port = free_port()
    cmd = [sys.executable, "-m", f"bench.{name}", "--port", str(port), "--upstream", upstream_url]
    url = f"http://127.0.0.1:{port}"
    root = Path(__file__).parent.parent
    proc = start(name, cmd, core=GATEWAY_CORE, url=url, log_dir=work, cwd=root)
    wait_http(proc, "/ready", 30)
    return Gateway(name, proc, BARE_PROXIES[name])


def litellm_available() -> bool:
    """Whether ``make bench-peers`` installed LiteLLM's proxy."""
    return (LITELLM_VENV / "bin" / "litellm").is_file()


def litellm_version() -> str | None:
    """The installed LiteLLM's version, from its package metadata in the peer venv."""
    found = sorted(LITELLM_VENV.glob("lib/python*/site-packages/litellm-*.dist-info"))
    return found[-1].name.removeprefix("litellm-").removesuffix(".dist-info") if found else None


def start_litellm(upstream_url: str, work: Path) -> Gateway:
    """LiteLLM's proxy with its defaults, one model routed to the fake OpenAI upstream."""
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {OPENAI_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{UPSTREAM_MODEL}\n"
        f"      api_base: {upstream_url}/v1\n"
        f"      api_key: {UPSTREAM_KEY}\n"
        "general_settings:\n"
        f"  master_key: {CLIENT_KEY}\n"
    )
    env = {
        # Offline: use the bundled model price map instead of fetching it at start.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
    }
    cmd = [
        str(LITELLM_VENV / "bin" / "litellm"),
        *("--config", str(config), "--host", "127.0.0.1", "--port", str(port)),
    ]
    proc = start(
        "litellm", cmd, core=GATEWAY_CORE, url=f"http://127.0.0.1:{port}", log_dir=work, env=env
    )
    wait_http(proc, "/health/liveliness", 120)
    return Gateway("litellm", proc, ("openai",))
