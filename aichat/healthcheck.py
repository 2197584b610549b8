"""``python -m aichat.healthcheck``: exit 0 when the local gateway answers ``GET /health``.

The container health check (Dockerfile, docker-compose.yml) runs this, because slim images have
no curl. It uses the standard library only, so a probe costs one short-lived interpreter and
never the gateway's own imports. It reads the same ``AICHAT_HOST``/``AICHAT_PORT`` the server
does; a wildcard listen address is probed on loopback.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping

DEFAULT_PORT = 8001  # Settings.port's default; tests/deploy checks the two agree
_WILDCARDS = {"", "0.0.0.0", "::"}


def health_url(env: Mapping[str, str] = os.environ) -> str:
    """The ``/health`` URL of the gateway configured by ``env``."""
    host = env.get("AICHAT_HOST", "").strip()
    host = "127.0.0.1" if host in _WILDCARDS else host
    if ":" in host:
        host = f"[{host}]"
    port = env.get("AICHAT_PORT", "").strip() or DEFAULT_PORT
    return f"http://{host}:{port}/health"


def check(url: str, timeout: float = 3.0) -> bool:
    """Whether ``url`` answers 200 within ``timeout`` seconds."""
    # A health probe must not be sent through an HTTP proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:  # refused, timed out, or an HTTP error status (URLError is an OSError)
        return False


def main() -> int:
    """Probe the gateway; the exit code is what Docker's HEALTHCHECK reads."""
    url = health_url()
    if check(url):
        return 0
    print(f"aichat healthcheck: {url} did not answer 200", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
