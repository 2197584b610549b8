"""The Cloudflare Worker's own test suite (``deploy/cloudflare``, ``node --test``) under pytest.

The suite runs the Worker in workerd through Miniflare against a fake aichats upstream on
127.0.0.1, and checks the shared vectors in ``tests/vectors``. ``npm ci`` runs only when
``node_modules`` is missing or older than ``package-lock.json``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

WORKER_DIR = Path(__file__).resolve().parents[2] / "deploy" / "cloudflare"
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or NPM is None,
    reason="node and npm are not installed: the Cloudflare Worker's tests need Node.js 20+",
)


def _npm(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    assert NPM is not None
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    return subprocess.run(  # noqa: S603 (a fixed npm command line)
        [NPM, *args],
        cwd=WORKER_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _report(what: str, result: subprocess.CompletedProcess[str]) -> str:
    output = (result.stdout + result.stderr)[-12_000:]
    failed = [line for line in result.stdout.splitlines() if line.lstrip().startswith("not ok")]
    return f"{what} exited {result.returncode}\n" + "\n".join(failed) + f"\n---\n{output}"


def _installed() -> bool:
    """Whether node_modules was installed after the lock file last changed."""
    marker = WORKER_DIR / "node_modules" / ".package-lock.json"  # npm writes it on install
    lock = WORKER_DIR / "package-lock.json"
    return marker.is_file() and marker.stat().st_mtime >= lock.stat().st_mtime


@pytest.mark.timeout(300)
def test_cloudflare_worker_suite() -> None:
    if not _installed():
        install = _npm("ci", "--no-audit", "--no-fund", timeout=240)
        assert install.returncode == 0, _report("npm ci", install)
    result = _npm("test", timeout=240)
    assert result.returncode == 0, _report("npm test (deploy/cloudflare)", result)
    assert "# fail 0" in result.stdout, _report("npm test (deploy/cloudflare)", result)
