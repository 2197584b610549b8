"""Settings from the environment, .env and flags; the CLI's config commands."""

from __future__ import annotations

import errno
import json
import re
import socket
from pathlib import Path

import pytest

from aichat.cli import main
from aichat.core.config import ENV_VARS, ConfigError, Settings, load_settings
from aichat.server import listen_error

ROUTE_WITHOUT_KEY = """
[[models]]
name = "local"
provider = "openai"
base_url = "http://127.0.0.1:11434/v1"
api_key_env = "LOCAL_KEY"
"""


def test_defaults() -> None:
    settings = load_settings({}, dotenv_path=None)
    assert settings.host == "0.0.0.0"
    assert settings.port == 8001
    assert settings.aichats_base_url == "https://ai-chats.org"
    assert settings.models == ("gpt-4o", "gpt-4o-2024-05-13")
    assert settings.api_keys == ()


def test_environment_values_and_key_lists() -> None:
    settings = load_settings(
        {
            "APP_SECRET": "one",
            "AICHAT_API_KEYS": "two, three,",
            "AICHAT_PORT": "9000",
            "AICHAT_MODELS": "a,b",
            "AICHATS_BASE_URL": "http://127.0.0.1:5000/",
            "AICHAT_ALLOW_NO_AUTH": "true",
            "AICHAT_IDLE_TIMEOUT": "2.5",
        },
        dotenv_path=None,
    )
    assert [k.get_secret_value() for k in settings.api_keys] == ["one", "two", "three"]
    assert settings.port == 9000
    assert settings.models == ("a", "b")
    assert settings.aichats_base_url == "http://127.0.0.1:5000"
    assert settings.allow_no_auth is True
    assert settings.idle_timeout == 2.5


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("AICHAT_PORT", "eighty"),
        ("AICHAT_PORT", "70000"),
        ("AICHATS_BASE_URL", "ftp://x"),
        ("AICHAT_IDLE_TIMEOUT", "-1"),
        ("AICHAT_LOG_FORMAT", "xml"),
        ("AICHATS_HISTORY", "sometimes"),
    ],
)
def test_invalid_values_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        load_settings({var: value}, dotenv_path=None)


def test_dotenv_is_read_and_real_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("AICHAT_PORT=7000\nAPP_SECRET=from-file\n")
    assert load_settings({}, dotenv_path=dotenv).port == 7000
    settings = load_settings({"AICHAT_PORT": "7001"}, dotenv_path=dotenv)
    assert settings.port == 7001
    assert settings.api_keys[0].get_secret_value() == "from-file"


def test_overrides_beat_environment() -> None:
    settings = load_settings({"AICHAT_PORT": "7001"}, dotenv_path=None, overrides={"port": 7002})
    assert settings.port == 7002


def test_no_key_refuses_unless_explicitly_open() -> None:
    with pytest.raises(ConfigError, match="APP_SECRET"):
        Settings().require_auth_decision()
    Settings(allow_no_auth=True).require_auth_decision()


def test_every_variable_maps_to_a_field_and_is_documented() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for var, (field, _) in ENV_VARS.items():
        assert field in Settings.model_fields
        assert f"`{var}`" in readme


def test_every_variable_of_the_env_example_is_documented() -> None:
    root = Path(__file__).parents[2]
    readme = (root / "README.md").read_text()
    example = (root / ".env.example").read_text()
    variables = re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE)
    assert "AICHAT_LB_PORT" in variables
    assert [var for var in variables if f"`{var}`" not in readme] == []


def test_cli_refuses_to_serve_without_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    assert main(["serve"]) == 2
    assert "APP_SECRET" in capsys.readouterr().err


def test_cli_config_show_redacts_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APP_SECRET", "sk-super-secret-value")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "sk-super-secret-value" not in out
    assert json.loads(out)["port"] == 8001


def _routes_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aichat.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[models]\nname = 1", "not valid TOML"),
        ('[[models]]\nname = "a"\nprovider = "nope"', '[[models]] #1 (name = "a") provider'),
        ('[[models]]\nname = "a"\nprovider = "mock"\ncolour = "red"', "colour"),
        ('[[models]]\nname = "a"\nprovider = "openai"', "base_url: required"),
        ('[[models]]\nname = "a"\nprovider = "mock"\nfallbacks = ["b"]', "no model named 'b'"),
        (
            '[[models]]\nname = "a"\nprovider = "mock"\ncontext_fallbacks = ["a"]',
            "context_fallbacks: no model named 'a'",
        ),
        (
            '[[models]]\nname = "a"\nprovider = "mock"\nprompt_caching = "auto"',
            "prompt_caching: only an anthropic upstream takes it",
        ),
        (
            '[[models]]\nname = "a"\nprovider = "mock"\n[[models]]\nname = "a"\nprovider = "mock"',
            "twice",
        ),
        (
            '[[models]]\nname = "a"\nprovider = "mock"\n[[keys]]\nname = "k"\nkey_env = "NOPE_KEY"',
            '[[keys]] name = "k" key_env: NOPE_KEY is not set',
        ),
        ('[[models]]\nname = "a"\nprovider = "mock"\napi_key = "sk-in-file"', "api_key_env"),
        ("title = 'no models'", "models"),
    ],
)
def test_routes_file_errors_name_file_table_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _routes_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings({"AICHAT_CONFIG": str(path)}, dotenv_path=None)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_routes_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({"AICHAT_CONFIG": str(tmp_path / "absent.toml")}, dotenv_path=None)


def test_routes_file_replaces_default_models(tmp_path: Path) -> None:
    path = _routes_file(
        tmp_path,
        '[[models]]\nname = "m"\nprovider = "openai"\nbase_url = "http://127.0.0.1:1/v1/"\n'
        'upstream_model = "up"\napi_key_env = "UP_KEY"',
    )
    settings = load_settings({"AICHAT_CONFIG": str(path), "UP_KEY": "sk-up"}, dotenv_path=None)
    (route,) = settings.model_routes
    assert route.base_url == "http://127.0.0.1:1/v1"
    assert route.target_model == "up"
    assert route.api_key is not None
    assert route.api_key.get_secret_value() == "sk-up"
    defaults = load_settings({}, dotenv_path=None).model_routes
    assert [(r.name, r.provider) for r in defaults] == [
        ("gpt-4o", "aichats"),
        ("gpt-4o-2024-05-13", "aichats"),
    ]


def test_config_show_redacts_upstream_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _routes_file(
        tmp_path,
        '[[models]]\nname = "m"\nprovider = "openai"\nbase_url = "http://x"\napi_key_env = "UP_KEY"',
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UP_KEY", "sk-upstream-very-secret")
    assert main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sk-upstream-very-secret" not in out
    assert json.loads(out)["routes"][0]["api_key_env"] == "UP_KEY"


def test_unset_upstream_key_variable_is_a_warning_naming_it(tmp_path: Path) -> None:
    path = _routes_file(tmp_path, ROUTE_WITHOUT_KEY)
    settings = load_settings({"AICHAT_CONFIG": str(path)}, dotenv_path=None)
    assert settings.routes[0].api_key is None
    (warning,) = settings.warnings()
    assert "LOCAL_KEY is not set" in warning
    assert "http://127.0.0.1:11434/v1" in warning
    with_key = load_settings({"AICHAT_CONFIG": str(path), "LOCAL_KEY": "sk-l"}, dotenv_path=None)
    assert with_key.warnings() == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("1", True), ("TRUE", True), ("Yes", True), (" on ", True)],
        *[("0", False), ("False", False), ("NO", False), ("off", False)],
    ],
)
def test_booleans_accept_the_usual_spellings(value: str, expected: bool) -> None:
    settings = load_settings({"AICHAT_PLAYGROUND": value}, dotenv_path=None)
    assert settings.playground is expected


@pytest.mark.parametrize("value", ["enabled", "2", "nope", "t"])
def test_booleans_refuse_anything_else_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=f"AICHAT_ALLOW_NO_AUTH: '{value}' is not a boolean"):
        load_settings({"AICHAT_ALLOW_NO_AUTH": value}, dotenv_path=None)


def _clean_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["--env-file", "custom.env", "config", "show"],
        ["config", "show", "--env-file", "custom.env"],
        ["config", "--env-file", "custom.env", "show"],
    ],
)
def test_env_file_is_accepted_before_or_after_the_subcommand(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    _clean_cli(monkeypatch, tmp_path)
    (tmp_path / "custom.env").write_text("AICHAT_PORT=7123\n")
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["port"] == 7123


@pytest.mark.parametrize("trouble", ["missing", "unreadable", "binary"])
def test_named_env_file_that_cannot_be_read_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    trouble: str,
) -> None:
    _clean_cli(monkeypatch, tmp_path)
    env_file = tmp_path / "x.env"
    if trouble == "unreadable":
        env_file.mkdir()  # a directory: unreadable even for root, who ignores file modes
    elif trouble == "binary":
        env_file.write_bytes(b"APP_SECRET=\xff\xfe\n")
    assert main(["serve", "--env-file", str(env_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aichat: {env_file}: cannot read: ")
    assert "--env-file" in err
    assert err.count("\n") == 1


def test_unreadable_config_file_is_one_line_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _clean_cli(monkeypatch, tmp_path)
    monkeypatch.setenv("APP_SECRET", "sk-x")
    assert main(["serve", "--config", str(tmp_path)]) == 2  # a directory
    err = capsys.readouterr().err
    assert "cannot read" in err
    assert "check the path and its permissions (AICHAT_CONFIG / --config)" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("models", ["", "models = []\n"])
def test_a_config_file_of_keys_only_says_why_it_needs_models(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    models: str,
) -> None:
    _clean_cli(monkeypatch, tmp_path)
    monkeypatch.setenv("APP_SECRET", "sk-x")
    monkeypatch.setenv("TEAM_KEY", "sk-team")
    config = tmp_path / "aichat.toml"
    config.write_text(f'{models}[[keys]]\nname = "team"\nkey_env = "TEAM_KEY"\n')
    assert main(["serve", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"aichat: {config}: no [[models]] table: a config file replaces AICHAT_MODELS, so it "
        "must name every model clients may ask for, each in a [[models]] table with its name "
        "and provider (see the README, Models and providers)\n"
    )


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["config", "--help"]])
def test_every_help_is_plain_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: aichat")
    for markup in ("``", ":func:", ":class:", ".. "):
        assert markup not in out


def test_config_show_lists_what_is_in_effect(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _clean_cli(monkeypatch, tmp_path)
    default = (main(["config", "show"]), json.loads(capsys.readouterr().out))
    assert default[0] == 0
    assert default[1]["models"] == ["gpt-4o", "gpt-4o-2024-05-13"]
    assert [r["provider"] for r in default[1]["routes"]] == ["aichats", "aichats"]
    path = _routes_file(tmp_path, ROUTE_WITHOUT_KEY)
    assert main(["config", "show", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    assert "models" not in shown  # AICHAT_MODELS is replaced by the file's routes
    assert [r["name"] for r in shown["routes"]] == ["local"]
    assert "LOCAL_KEY is not set" in captured.err


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            OSError(errno.EACCES, "Permission denied"),
            "cannot listen on 0.0.0.0:80: permission denied; ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE: pick a port from 1024 up with --port / AICHAT_PORT",
        ),
        (
            OSError(errno.EADDRINUSE, "Address in use"),
            "cannot listen on 0.0.0.0:80: the port is in use by another process; stop it, "
            "or pick another port with --port / AICHAT_PORT",
        ),
        (
            OSError(errno.EADDRNOTAVAIL, "Cannot assign"),
            "cannot listen on 0.0.0.0:80: the address is not one of this machine's; use "
            "0.0.0.0 (every interface) or 127.0.0.1 with --host / AICHAT_HOST",
        ),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "cannot listen on 0.0.0.0:80: unknown host name; set --host / AICHAT_HOST to an "
            "address of this machine",
        ),
    ],
)
def test_listen_failures_name_cause_and_fix(error: OSError, expected: str) -> None:
    assert listen_error("0.0.0.0", 80, error) == expected
