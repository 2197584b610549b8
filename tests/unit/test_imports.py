"""Every module imports on its own: no import cycle hides behind a lucky import order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Each module is imported first thing, with every aichat module forgotten before it.
SCRIPT = """
import importlib, pkgutil, sys
import aichat
# __main__ runs the command line when imported: that is its job.
names = [
    m.name for m in pkgutil.walk_packages(aichat.__path__, "aichat.") if m.name != "aichat.__main__"
]
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "aichat" or m.startswith("aichat.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {exc!r}")
print(len(names))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first() -> None:
    result = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(result.stdout.split()[0]) > 30


# Built, started and stopped like `aichat serve` does, minus the socket.
WITHOUT_REDIS = """
import asyncio, sys
from aiohttp import web
from aichat.app import create_app
from aichat.core.config import ModelConfig, Settings

route = ModelConfig(name="m", provider="openai", base_url="http://127.0.0.1:9/v1")
app = create_app(Settings(routes=(route,), allow_no_auth=True))

async def start_and_stop():
    runner = web.AppRunner(app)
    await runner.setup()
    await runner.cleanup()

asyncio.run(start_and_stop())
print(sorted(m for m in sys.modules if m.split(".")[0] in ("redis", "opentelemetry")))
"""


def test_redis_is_not_imported_without_redis_url(tmp_path: Path) -> None:
    # redis and what it pulls in are about 8 MB of a gateway's memory at rest.
    result = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, "-c", WITHOUT_REDIS],
        cwd=tmp_path,  # where its usage history goes
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
