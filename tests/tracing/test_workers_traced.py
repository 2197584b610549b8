"""``aichat serve --workers 2`` traced: each worker exports from its own thread, after the fork."""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import _start
from tests.deploy.procs import free_port, server_env, started
from tests.e2e.test_processes import AUTH, HELLO, _config
from tests.e2e.test_workers import _workers
from tests.tracing.conftest import QUICK_EXPORT
from tests.tracing.receiver import Receiver

pytestmark = pytest.mark.slow
REQUESTS = 16


async def test_each_worker_exports_its_own_spans(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver_runner, receiver_url = await _start(receiver.app())
    port = free_port()
    env = server_env(
        port,
        AICHAT_CONFIG=_config(tmp_path),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver_url,
        **QUICK_EXPORT,
    )
    command = [sys.executable, "-m", "aichat", "serve", "--workers", "2"]
    try:
        async with started(command, env, tmp_path, workers=2) as server:
            workers = set(_workers(server.process.pid))
            for _ in range(REQUESTS):  # a new connection each: the kernel spreads them
                async with aiohttp.ClientSession() as http:
                    response = await http.post(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        json={"model": "quick", **HELLO},
                        headers=AUTH,
                    )
                    assert response.status == 200, await response.text()
            spans = await receiver.wait_for(2 * REQUESTS)
    finally:
        await receiver_runner.cleanup()
    pids = {span.resource["process.pid"] for span in spans}
    assert pids == workers, (pids, workers)
