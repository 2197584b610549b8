"""The Dockerfile's rules, and its run and health-check commands against the built wheel.

No Docker daemon runs where the tests do, so the image itself is never built here. What it
would run is: the wheel, installed alone into a fresh virtualenv, started with exactly the
final stage's ENTRYPOINT + CMD and probed with exactly its HEALTHCHECK command.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import pytest

from aichat import healthcheck
from aichat.core.config import Settings
from tests.deploy.files import (
    DOCKERFILE,
    ROOT,
    final_stage,
    healthcheck_command,
    instructions,
    run_command,
)
from tests.deploy.procs import free_port, run, server_env, started

# --- the Dockerfile's rules ----------------------------------------------------------------------


def test_is_multi_stage_on_one_pinned_official_slim_python() -> None:
    bases = DOCKERFILE.parent_images
    assert len(bases) >= 2 and DOCKERFILE.is_multistage
    assert len(set(bases)) == 1, "every stage on the same base image"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", bases[0])


def test_builds_a_wheel_first_and_installs_only_wheels_last() -> None:
    (build_run,) = [run["value"] for run in instructions("RUN") if run not in final_stage("RUN")]
    assert build_run.startswith("pip wheel ")
    (install,) = [run["value"] for run in final_stage("RUN")]
    assert "--no-index" in install and '"aichat[tokens,speed,postgres]"' in install
    assert not final_stage("COPY") and not final_stage("ADD"), "no source tree in the image"


def test_keeps_the_usage_history_on_a_volume_the_user_owns() -> None:
    (install,) = [run["value"] for run in final_stage("RUN")]
    assert "install -d -o 10001 -g 10001 -m 0700 /var/lib/aichat" in install
    assert [volume["value"] for volume in final_stage("VOLUME")] == ['["/var/lib/aichat"]']
    env = " ".join(item["value"] for item in final_stage("ENV"))
    assert "AICHAT_USAGE_DB=/var/lib/aichat/usage.db" in env


def test_runs_as_a_non_root_user() -> None:
    users = final_stage("USER")
    assert users, "the final stage sets USER"
    user, _, group = users[-1]["value"].partition(":")
    assert user not in {"root", "0"} and group not in {"root", "0"}


def test_exposes_8001_and_checks_health_with_the_stdlib_probe() -> None:
    assert [expose["value"] for expose in final_stage("EXPOSE")] == ["8001"]
    assert healthcheck_command() == ["python", "-m", "aichat.healthcheck"]


def test_runs_aichat_serve_as_pid_1() -> None:
    # Exec form (checked by run_command) means no shell in between to swallow SIGTERM.
    assert run_command() == ["aichat", "serve"]
    stop = final_stage("STOPSIGNAL")
    assert not stop or stop[-1]["value"] == "SIGTERM"


def test_bakes_in_no_secret() -> None:
    secret = re.compile(r"SECRET|API_KEY|TOKEN|PASSWORD", re.IGNORECASE)
    for item in instructions("ENV") + instructions("ARG"):
        assert not secret.search(item["value"]), item["content"]


# --- the build context ---------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: Go's filepath.Match plus ``**`` for any depth."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _in_context(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path, or a directory above it, decides."""
    parents = ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 2)]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(parent) for parent in parents):
            included = negated
    return included


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_pattern_matcher_follows_docker() -> None:
    patterns = ["*", "!keep/", "**/*.tmp"]
    assert not _in_context("top.txt", patterns)
    assert _in_context("keep/a/b.txt", patterns)
    assert not _in_context("keep/a/b.tmp", patterns)


def test_build_context_holds_the_package_and_nothing_private() -> None:
    # Tracked and new files alike (a build context is the working tree, not the last commit).
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    tracked = listed.stdout.split()
    private = [
        ".env",
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "aichat/__pycache__/app.cpython-311.pyc",
        ".mypy_cache/3.11/aichat/app.meta.json",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/CACHEDIR.TAG",
        "dist/aichat",
    ]
    patterns = _dockerignore()
    context = {path for path in tracked + private if _in_context(path, patterns)}
    assert all(
        path in {"pyproject.toml", "README.md"}
        or (path.startswith("aichat/") and "__pycache__" not in path)
        for path in context
    ), sorted(context)
    assert {"pyproject.toml", "README.md", "aichat/cli.py", "aichat/healthcheck.py"} <= context
    # Everything the Dockerfile copies is there to be copied.
    for copy in instructions("COPY"):
        for source in copy["value"].split()[:-1]:
            assert any(p == source or p.startswith(source) for p in context), source


# --- the health probe ----------------------------------------------------------------------------


def test_probe_default_port_is_the_servers() -> None:
    assert Settings.model_fields["port"].default == healthcheck.DEFAULT_PORT


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8001/health"),
        ({"AICHAT_HOST": "0.0.0.0", "AICHAT_PORT": "9000"}, "http://127.0.0.1:9000/health"),
        ({"AICHAT_HOST": "::"}, "http://127.0.0.1:8001/health"),
        ({"AICHAT_HOST": "10.1.2.3"}, "http://10.1.2.3:8001/health"),
        ({"AICHAT_HOST": "fd00::1"}, "http://[fd00::1]:8001/health"),
    ],
)
def test_probe_finds_the_server_where_it_listens(env: dict[str, str], url: str) -> None:
    assert healthcheck.health_url(env) == url


# --- the image's commands, run for real ----------------------------------------------------------


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding only aichat's wheel (with the ``tokens`` extra) and its deps."""
    base = tmp_path_factory.mktemp("wheel")
    # The build stage's context: a clean copy, so nothing stale from a working tree's build/
    # or egg-info can slip into the wheel.
    source = base / "src"
    shutil.copytree(
        ROOT / "aichat", source / "aichat", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    venv = base / "venv"
    for step in (
        (sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", base, source),
        (sys.executable, "-m", "venv", venv),
    ):
        done = run(*step, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = base.glob("aichat-*.whl")
    done = run(venv / "bin" / "pip", "install", "-q", f"{wheel}[tokens]", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def _image_env(venv: Path, port: int, volume: Path) -> dict[str, str]:
    """The container's environment: the image's ENV, its PATH pointing at ``venv``, the key;
    its volume, /var/lib/aichat, is the directory ``volume`` here."""
    image_env = {
        k: v.replace("/var/lib/aichat", str(volume))
        for k, v in DOCKERFILE.envs.items()
        if k != "PATH"
    }
    return server_env(port, f"{venv / 'bin'}:/usr/bin:/bin", **image_env)


def _probe(env: dict[str, str], workdir: Path) -> int:
    """The HEALTHCHECK command's exit code, run as Docker runs it."""
    return run(*healthcheck_command(), env=env, cwd=workdir, timeout=30).returncode


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_image_commands_serve_probe_and_stop(
    installed_wheel: Path, tmp_path: Path
) -> None:
    env = _image_env(installed_wheel, free_port(), tmp_path)
    assert await asyncio.to_thread(_probe, env, tmp_path) == 1, "unhealthy before it listens"
    async with started(run_command(), env, tmp_path) as server:
        assert await asyncio.to_thread(_probe, env, tmp_path) == 0, server.output()
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert await server.stop() == 0, server.output()
        assert loop.time() - began < 5, "an idle gateway stops promptly on SIGTERM"
    assert "listening on http://127.0.0.1" in server.output()
    assert (tmp_path / "usage.db").is_file(), "the history is kept on the image's volume"
