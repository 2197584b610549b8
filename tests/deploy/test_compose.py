"""docker-compose.yml and .env.example, read by a real Compose-spec parser (compose-spec)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from aichat.core.config import ENV_VARS, Settings
from tests.deploy.balancer import render_for_loopback
from tests.deploy.files import (
    COMPOSE_FILE,
    ROOT,
    compose_lb_config,
    healthcheck_command,
    interpolate,
    load_compose,
)

ENV_EXAMPLE = ROOT / ".env.example"
# `AICHAT_PUBLISH` as README's scale-out section sets it.
SCALE_OUT = {"AICHAT_PUBLISH": "127.0.0.1::8001"}


@pytest.fixture(params=[{}, SCALE_OUT], ids=["default", "scale-out"])
def stack(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_compose(request.param)


def test_interpolation_follows_compose_rules() -> None:
    text = "${A:-x} ${A-y} ${B:-x} ${B-y} ${C} $$C"
    assert interpolate(text, {"A": ""}) == "x  x y  $C"
    assert interpolate(text, {"A": "a", "C": "c"}) == "a a x y c $C"


def test_every_dependency_is_a_service(stack: dict[str, Any]) -> None:
    services = stack["services"]
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services) - {name}, name


def test_gateway_is_configured_from_env_and_waits_for_redis(stack: dict[str, Any]) -> None:
    gateway = stack["services"]["aichat"]
    assert gateway["build"] == "."
    assert gateway["env_file"] == ".env"
    assert gateway["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gateway["restart"] in {"always", "unless-stopped"}
    # The image's own probe (Dockerfile HEALTHCHECK), so both agree on what healthy means.
    assert gateway["healthcheck"]["test"] == ["CMD", *healthcheck_command()]


def test_gateway_keeps_its_usage_history_on_a_named_volume(stack: dict[str, Any]) -> None:
    assert stack["services"]["aichat"]["volumes"] == ["usage:/var/lib/aichat"]
    assert "usage" in stack["volumes"]


def test_gateway_gets_time_to_drain_open_streams(stack: dict[str, Any]) -> None:
    grace = stack["services"]["aichat"]["stop_grace_period"]
    drain = Settings.model_fields["drain_timeout"].default
    assert grace.endswith("s") and int(grace[:-1]) > drain, grace


@pytest.mark.parametrize("name", ["aichat", "redis", "lb"])
def test_services_are_locked_down_and_bounded(stack: dict[str, Any], name: str) -> None:
    service = stack["services"][name]
    assert service["read_only"] is True
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["tmpfs"], "a writable scratch directory on a read-only root"
    limits = service["deploy"]["resources"]["limits"]
    assert limits["cpus"] and limits["memory"]
    assert "healthcheck" in service or name == "lb"


def test_gateway_has_tmp_and_no_capabilities(stack: dict[str, Any]) -> None:
    gateway = stack["services"]["aichat"]
    assert "/tmp" in gateway["tmpfs"]
    assert gateway["cap_drop"] == ["ALL"]


def test_redis_is_healthchecked_and_keeps_nothing_on_disk(stack: dict[str, Any]) -> None:
    redis = stack["services"]["redis"]
    assert redis["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
    assert redis["command"][redis["command"].index("--save") + 1] == ""


def test_images_are_pinned(stack: dict[str, Any]) -> None:
    for name, service in stack["services"].items():
        if "build" not in service:
            assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", service["image"]), name


def test_default_stack_publishes_the_gateway_on_8001() -> None:
    services = load_compose({})["services"]
    assert services["aichat"]["ports"] == ["8001:8001"]
    assert "ports" not in services["redis"]


def test_scale_out_leaves_the_public_port_to_the_load_balancer() -> None:
    services = load_compose(SCALE_OUT)["services"]
    # An empty host port: every replica gets its own, on loopback only, so any number fit.
    assert services["aichat"]["ports"] == ["127.0.0.1::8001"]
    assert services["lb"]["profiles"] == ["scale"]
    assert services["lb"]["ports"] == ["8001:8001"]
    assert services["lb"]["depends_on"]["aichat"]["condition"] == "service_healthy"


def test_load_balancer_proxies_streams_unbuffered_to_every_replica() -> None:
    nginx = compose_lb_config()
    assert "resolver 127.0.0.11" in nginx  # Docker's DNS: one answer per replica
    assert "server aichat:8001 resolve" in nginx  # re-resolved while nginx runs
    assert "proxy_pass http://gateways;" in nginx
    assert "proxy_buffering off;" in nginx
    assert "listen 8001;" in nginx


def test_load_balancer_renders_for_loopback_changing_only_where_replicas_are() -> None:
    original = compose_lb_config().splitlines()
    rendered = render_for_loopback(compose_lb_config(), 9000, [9001, 9002]).splitlines()
    removed = [line.strip() for line in original if line not in rendered]
    added = [line.strip() for line in rendered if line not in original]
    assert [line.split()[0] for line in removed] == ["resolver", "server", "listen"]
    assert added == [
        "server 127.0.0.1:9001 max_fails=1 fail_timeout=2s;",
        "server 127.0.0.1:9002 max_fails=1 fail_timeout=2s;",
        "listen 127.0.0.1:9000;",
    ]
    assert [line for line in rendered if line in original] == [
        line for line in original if line.strip() not in removed
    ]


def _example_lines() -> list[str]:
    return ENV_EXAMPLE.read_text().splitlines()


def test_env_example_lists_every_variable_with_a_comment() -> None:
    lines = _example_lines()
    for var in ENV_VARS:
        where = [n for n, line in enumerate(lines) if re.fullmatch(rf"(# )?{var}=.*", line.strip())]
        assert len(where) == 1, f"{var} should appear once in .env.example"
        above = lines[where[0] - 1]
        assert above.startswith("# ") and not re.match(r"# [A-Z_]+=", above), f"{var}: comment"


def test_env_example_names_only_real_variables() -> None:
    compose = COMPOSE_FILE.read_text()
    for line in _example_lines():
        if found := re.fullmatch(r"(?:# )?([A-Z][A-Z0-9_]*)=.*", line):
            name = found[1]
            assert name in ENV_VARS or "${" + name in compose, f"{name} is read by nothing"


def test_env_example_holds_no_secret() -> None:
    assert "APP_SECRET=" in _example_lines()
    assert not any(line.startswith("AICHAT_API_KEYS=") for line in _example_lines())
