"""Config tables of the operations features: discovery routes, token and money budgets."""

from __future__ import annotations

from pathlib import Path

import pytest

from aichat.core.config import ConfigError, PriceConfig, Settings, load_config_file
from aichat.operations.budgets import Budget, key_budgets, window_ids, window_resets

DISCOVER = """
[[models]]
name = "local"
provider = "openai"
base_url = "http://127.0.0.1:11434/v1"
models = "discover"
prefix = "ollama/"

[[keys]]
name = "team"
key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
models = ["ollama/llama3.1"]
tokens_per_day = 100000
tokens_per_month = 2000000
usd_per_day = 0.1
usd_per_month = 25
"""


def test_a_discovery_route_and_a_budgeted_key_restricted_to_discovered_names(
    tmp_path: Path,
) -> None:
    path = tmp_path / "aichat.toml"
    path.write_text(DISCOVER)
    (route,), (key,) = load_config_file(path, {})
    assert route.discovers and route.prefix == "ollama/"
    assert key_budgets(Settings(keys=(key,))) == {
        "team": (
            Budget("tokens", (100_000, 2_000_000)),
            Budget("usd", (100_000_000, 25_000_000_000)),  # in nano-dollars, exactly
        )
    }


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (('provider = "openai"', 'provider = "mock"'), "only an openai upstream can list"),
        (('models = "discover"\n', ""), 'prefix: only with models = "discover"'),
        (('"ollama/llama3.1"', '"other"'), "no model named 'other'"),
        (("tokens_per_day = 100000", "tokens_per_day = 0"), "tokens_per_day"),
        (("usd_per_day = 0.1", "usd_per_day = 0"), "usd_per_day"),
        (("usd_per_month = 25", "usd_per_month = 2e6"), "usd_per_month"),
    ],
)
def test_misused_tables_are_refused_naming_table_and_key(
    tmp_path: Path, change: tuple[str, str], problem: str
) -> None:
    path = tmp_path / "aichat.toml"
    path.write_text(DISCOVER.replace(*change))
    with pytest.raises(ConfigError, match=problem):
        load_config_file(path, {})


def test_budget_windows_are_utc_calendar_days_and_months() -> None:
    new_year_eve = 1798761599.0  # 2026-12-31T23:59:59Z
    assert window_ids(new_year_eve) == ("2026-12-31", "2026-12")
    day, month = window_resets(new_year_eve)
    assert day.isoformat() == month.isoformat() == "2027-01-01T00:00:00+00:00"
    assert window_resets(new_year_eve - 86400 * 31)[1].isoformat() == "2026-12-01T00:00:00+00:00"


def readme_section(title: str) -> str:
    """The text of one ``###`` section of the README."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    return readme.split(f"\n### {title}\n", 1)[1].split("\n#", 1)[0]


def test_the_readme_budget_discovery_and_price_tables_load_as_printed(tmp_path: Path) -> None:
    blocks = [
        readme_section(title).split("```toml\n", 1)[1].split("```", 1)[0]
        for title in ("Discovered models", "Token budgets", "Money budgets", "Prices")
    ]
    path = tmp_path / "aichat.toml"
    path.write_text("\n".join(blocks))
    environ = {"TEAM_B_KEY": "sk-team-b", "CLAUDE_CODE_KEY": "sk-claude-code"}
    (route, *priced), keys = load_config_file(path, environ)
    assert route.discovers and route.prefix == "ollama/"
    assert [r.price for r in priced] == [None, "anthropic", PriceConfig(input=0, output=0)]
    assert key_budgets(Settings(keys=keys)) == {
        "team-b": (Budget("tokens", (200000, 3000000)),),
        "claude-code": (Budget("usd", (20_000_000_000, 250_500_000_000)),),
    }
