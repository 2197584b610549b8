"""The playground's static files: self-contained, no inline code, no HTML sinks, shipped."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp import web

from aichat.core.config import StartupError, load_settings
from aichat.inbound import playground

ROOT = Path(__file__).parents[2]
STATIC = ROOT / "aichat" / "inbound" / "static"
FILES = ("index.html", "app.js", "theme.css", "style.css")


class _Page(HTMLParser):
    """Collects what the CSP cares about: URLs, inline scripts and styles, handlers, ids."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.problems: list[str] = []
        self.ids: set[str] = set()
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]
        self.problems += [f"<{tag} {name}>" for name, _ in attrs if name.startswith("on")]
        if "style" in values or tag == "style":
            self.problems.append(f"inline style on <{tag}>")
        if tag == "script" and not values.get("src"):
            self.problems.append("inline <script>")
        if values.get("id"):
            self.ids.add(values["id"] or "")


def _page() -> _Page:
    page = _Page()
    page.feed((STATIC / "index.html").read_text())
    return page


def test_page_loads_nothing_from_elsewhere() -> None:
    page = _page()
    assert page.problems == []
    assert page.urls  # the script and the style sheet at least
    for url in page.urls:
        assert url == "data:," or not re.match(r"[a-z]+:|//", url), url
    for name in FILES:
        assert "://" not in (STATIC / name).read_text(), name


def test_script_never_parses_text_as_html() -> None:
    script = (STATIC / "app.js").read_text()
    sinks = r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|srcdoc"
    assert re.findall(sinks, script) == []


def test_script_finds_every_element_it_uses() -> None:
    used = set(re.findall(r'\$\("([\w-]+)"\)', (STATIC / "app.js").read_text()))
    assert used
    assert used <= _page().ids


@pytest.mark.parametrize(("value", "enabled"), [(None, True), ("1", True), ("0", False)])
def test_aichat_playground_switches_the_page(value: str | None, enabled: bool) -> None:
    env = {} if value is None else {"AICHAT_PLAYGROUND": value}
    assert load_settings(env, dotenv_path=None).playground is enabled


def test_missing_files_stop_the_start_with_advice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A bundle built without the package data fails loudly, naming the way out."""
    monkeypatch.setattr(playground, "files", lambda _package: tmp_path)
    with pytest.raises(StartupError, match=r"index\.html is missing .* AICHAT_PLAYGROUND=0"):
        playground.add_playground(web.Application().router)


@pytest.mark.slow
def test_wheel_ships_the_static_files(tmp_path: Path) -> None:
    """The Docker image and ``pip install`` get the page from the wheel, not the source tree."""
    # A copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    source, out = tmp_path / "source", tmp_path / "wheel"
    shutil.copytree(
        ROOT / "aichat", source / "aichat", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    subprocess.run(  # noqa: S603 (a fixed pip command line)
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = out.glob("aichat-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {f"aichat/inbound/static/{name}" for name in FILES} <= shipped
