"""The repository's deployment files, parsed once for the tests that check them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = DockerfileParser(str(ROOT / "Dockerfile"))


def instructions(name: str) -> list[dict[str, Any]]:
    """Every ``name`` instruction of the Dockerfile, in order."""
    return [item for item in DOCKERFILE.structure if item["instruction"] == name]


def final_stage(name: str) -> list[dict[str, Any]]:
    """The ``name`` instructions of the last stage: the image that ships."""
    last_from = instructions("FROM")[-1]["startline"]
    return [item for item in instructions(name) if item["startline"] > last_from]


def exec_form(value: str) -> list[str]:
    """A JSON-array (exec form) command; fails on shell form, which would put a shell at PID 1."""
    command = json.loads(value)
    assert isinstance(command, list) and all(isinstance(arg, str) for arg in command), value
    return command


def run_command() -> list[str]:
    """What ``docker run <image>`` executes: ENTRYPOINT followed by CMD."""
    (entrypoint,) = final_stage("ENTRYPOINT")
    (cmd,) = final_stage("CMD")
    return exec_form(entrypoint["value"]) + exec_form(cmd["value"])


def healthcheck_command() -> list[str]:
    """The command of the image's HEALTHCHECK (its options stripped)."""
    (healthcheck,) = final_stage("HEALTHCHECK")
    _, separator, command = healthcheck["value"].partition("CMD ")
    assert separator, healthcheck["value"]
    return exec_form(command)
