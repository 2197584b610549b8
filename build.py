"""Build ``dist/aichat``: a one-file executable of the ``aichat`` command, with PyInstaller.

Usage: ``python build.py`` (or ``make exe``) with the ``build`` extra installed
(``pip install -e '.[tokens,build]'``). The executable is ``aichat.__main__:main``: it takes the same
subcommands, flags and environment variables as the installed command, e.g.
``APP_SECRET=<a key> dist/aichat serve --port 8001``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent
_NOT_NEEDED = ("mypy", "hypothesis", "rich", "pygments", "requests", "opentelemetry", "uvloop")


def pyinstaller_args(dist_dir: Path, work_dir: Path) -> list[str]:
    """PyInstaller's command line for the one-file ``aichat`` executable."""
    return [
        str(ROOT / "aichat" / "__main__.py"),  # the console script's entry point too
        "--name=aichat",
        "--onefile",
        "--noconfirm",
        "--log-level=WARN",
        f"--paths={ROOT}",
        f"--distpath={dist_dir}",
        f"--workpath={work_dir}",
        f"--specpath={work_dir}",
        # aichat reports its version from package metadata, which a bundle lacks by default.
        "--copy-metadata=aichat",
        # The `tokens` extra's package imports its native module by name at run time and reads
        # the o200k_base tables from data files: static analysis finds neither.
        "--collect-all=bpe_openai",
        # Optional integrations that aichat never uses, found through pydantic (mypy and
        # hypothesis plugins, rich), redis (OCSP via requests, OpenTelemetry) and aiohttp (the
        # gunicorn worker's uvloop). In a development venv they would double the executable.
        *(f"--exclude-module={name}" for name in _NOT_NEEDED),
        # The playground page (aichat/inbound/static) is read from package data at start.
        "--collect-data=aichat",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Build the executable; return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist-dir", type=Path, default=ROOT / "dist", help="default: dist/")
    parser.add_argument(
        "--work-dir", type=Path, default=ROOT / "build" / "pyinstaller", help="scratch space"
    )
    args = parser.parse_args(argv)
    try:
        import PyInstaller.__main__  # type: ignore[import-untyped]
    except ImportError:
        print("build.py needs PyInstaller: pip install -e '.[tokens,build]'", file=sys.stderr)
        return 1
    PyInstaller.__main__.run(pyinstaller_args(args.dist_dir, args.work_dir))
    print(f"built {args.dist_dir / 'aichat'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
