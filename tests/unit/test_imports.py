"""Every module imports on its own: no import cycle hides behind a lucky import order."""

from __future__ import annotations

import subprocess
import sys

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
