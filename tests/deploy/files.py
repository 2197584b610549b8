"""The repository's deployment files, parsed once for the tests that check them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compose_spec import PyCompose
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = DockerfileParser(str(ROOT / "Dockerfile"))
COMPOSE_FILE = ROOT / "docker-compose.yml"


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


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable syntax, the subset this file uses: ``${X}``, ``${X:-d}``, ``${X-d}``,
    ``$$``. Compose interpolates before it validates, and the parser does not interpolate."""

    def value(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, default = match["name"], match["op"], match["default"]
        if name in env and (env[name] or op != ":-"):
            return env[name]
        return default if op else ""

    return _VARIABLE.sub(value, text)


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with ``env``, validated by the parser."""
    compose = PyCompose.from_yaml(interpolate(COMPOSE_FILE.read_text(), env))
    compose.validate()
    return compose.to_dict()


def compose_lb_config() -> str:
    """The nginx configuration compose mounts into ``lb``, after Compose's interpolation."""
    stack = load_compose({})
    (mount,) = stack["services"]["lb"]["configs"]
    return str(stack["configs"][mount["source"]]["content"])
