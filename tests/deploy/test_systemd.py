"""deploy/systemd/aichat.service: what it promises, checked by systemd's own analyzer."""

from __future__ import annotations

import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from aichat.core.config import Settings
from tests.deploy.files import ROOT
from tests.deploy.procs import run

UNIT = ROOT / "deploy" / "systemd" / "aichat.service"
INSTALLED_AICHAT = "/opt/aichat/bin/aichat"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (not a systemd host)"
)


def _directives(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value given, in order (systemd allows repeating a key)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key.strip()].append(value.strip())
    return sections


SERVICE = _directives(UNIT.read_text())["Service"]


def _one(key: str) -> str:
    values = SERVICE[key]
    assert len(values) == 1, f"{key} given {len(values)} times"
    return values[0]


def test_runs_the_pip_installed_command_as_a_notify_service() -> None:
    assert _one("Type") == "notify"
    assert _one("ExecStart") == f"{INSTALLED_AICHAT} serve"
    assert _one("EnvironmentFile") == "/etc/aichat/aichat.env"
    assert _one("Restart") == "on-failure"
    assert _one("ExecReload") == "/bin/kill -HUP $MAINPID"  # aichat reloads on SIGHUP


def test_runs_as_a_dedicated_unprivileged_user() -> None:
    assert _one("User") == "aichat"
    assert _one("DynamicUser") == "yes"
    assert _one("CapabilityBoundingSet") == ""
    assert _one("AmbientCapabilities") == ""


def test_keeps_the_usage_history_in_its_state_directory() -> None:
    assert _one("StateDirectory") == "aichat"
    assert _one("Environment") == "AICHAT_USAGE_DB=/var/lib/aichat/usage.db"


def test_is_hardened() -> None:
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
        "LockPersonality",
    ):
        assert _one(key) == "yes", key
    assert _one("ProtectSystem") == "strict"
    # AF_UNIX stays: it carries the READY=1 notification to systemd.
    assert set(_one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_waits_longer_than_aichat_drains() -> None:
    drain = Settings.model_fields["drain_timeout"].default
    assert float(_one("TimeoutStopSec").removesuffix("s")) > drain


def test_allows_tens_of_thousands_of_connections() -> None:
    # systemd's default soft limit, 1,024 descriptors, is 1,024 idle clients.
    assert int(_one("LimitNOFILE")) >= 65536


@pytest.fixture
def unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's ``aichat``.

    ``systemd-analyze verify`` checks that the command exists, and no test may write /opt.
    """
    aichat = Path(sys.executable).parent / "aichat"
    assert aichat.is_file(), "the aichat command is installed beside the test interpreter"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED_AICHAT, str(aichat)))
    return copy


@needs_systemd_analyze
def test_systemd_analyze_verify_passes(unit_here: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    result = run(SYSTEMD_ANALYZE, "verify", unit_here)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert unit_here.name not in output, output  # not even a warning about our unit


@needs_systemd_analyze
def test_systemd_rates_the_exposure_as_ok(unit_here: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    result = run(SYSTEMD_ANALYZE, "security", "--offline=true", unit_here)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    # systemd's scale: 0 is fully locked down, 10 is unprotected; below 2 it says "OK".
    assert float(found.group(1)) < 2.0, result.stdout
