"""The load generator: runs the phases of one target and reports what it measured as JSON.

Runs in its own process (``python -m bench.loadgen < spec.json``), on the same core as the
fake upstream. Each request's arrival times are taken per answer marker (see
``bench.answer``), which gives time to first token and the gaps between tokens. CPU and
memory of the watched processes (gateway, upstream) are read from ``/proc`` at the exact
start and end of each measured phase, so start-up and warm-up never count.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bench import procstats
from bench.answer import marker
from bench.client import Connection, connect, raw_request
from bench.loops import run_fast
from bench.stats import summary_ms

_HOLD_BATCH = 100  # connect idle streams in batches: a burst of 1,000 SYNs overflows backlogs


@dataclass
class Target:
    """Where requests go and what a complete answer looks like."""

    url: str
    headers: dict[str, str]
    chunks: int
    end: bytes  # bytes a complete answer ends with (b"" when there is nothing to check)
    markers: tuple[bytes, ...] = ()
    host: str = ""
    port: int = 0
    path: str = ""

    def __post_init__(self) -> None:
        self.markers = tuple(marker(i) for i in range(self.chunks))
        parts = urlsplit(self.url)
        self.host, self.port, self.path = parts.hostname or "", parts.port or 80, parts.path

    def request(self, body: bytes) -> bytes:
        """The raw bytes of one request to this target."""
        return raw_request(self.host, self.port, self.path, self.headers, body)


@dataclass
class Samples:
    """Everything one phase measured on the client side."""

    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def fail(self, reason: str) -> None:
        """Count a failed request, keeping the first reason for the report."""
        self.errors += 1
        self.first_error = self.first_error or reason


async def one_request(conn: Connection, target: Target, raw: bytes, samples: Samples) -> None:
    """Send one request; record its time to first token, token gaps and total time."""
    started = time.perf_counter()
    response = await conn.request(raw, target.markers)
    times = response.marker_times
    if response.status != 200:
        samples.fail(f"HTTP {response.status}: {bytes(response.body[:200])!r}")
    elif len(times) != target.chunks or not response.body.endswith(target.end):
        tail = bytes(response.body[-40:])
        samples.fail(f"incomplete answer: {len(times)} markers, ends {tail!r}")
    else:
        samples.ttft.append(times[0] - started)
        samples.gaps.extend(b - a for a, b in itertools.pairwise(times))
        samples.total.append(time.perf_counter() - started)


async def run_load(target: Target, phase: dict[str, Any]) -> tuple[Samples, float]:
    """``requests`` requests at ``concurrency`` (a connection each), stopped at ``max_seconds``."""
    raw = target.request(phase["body"].encode())
    samples = Samples()
    remaining = phase["requests"]
    deadline = time.perf_counter() + phase["max_seconds"]

    async def worker() -> None:
        nonlocal remaining
        conn: Connection | None = None
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            try:
                if conn is None or conn.closed:
                    conn = await connect(target.host, target.port)
                async with asyncio.timeout(phase["max_seconds"] + 30):
                    await one_request(conn, target, raw, samples)
            except (OSError, TimeoutError) as exc:
                samples.fail(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(phase["concurrency"])))
    return samples, time.perf_counter() - started


def _snapshot(watch: dict[str, int]) -> dict[str, float]:
    return {name: procstats.cpu_seconds(pid) for name, pid in watch.items()}


async def load_phase(
    target: Target, phase: dict[str, Any], watch: dict[str, int]
) -> dict[str, Any]:
    """Warm up, then measure one load phase: throughput, latency, CPU and peak memory."""
    warm = {**phase, "requests": phase["concurrency"] * 4, "max_seconds": 10}
    await run_load(target, warm)
    peaks_reset = all(procstats.reset_peak_rss(pid) for pid in watch.values())
    cpu_before = {**_snapshot(watch), "loadgen": time.process_time()}
    cores_before = procstats.core_busy_seconds()
    samples, elapsed = await run_load(target, phase)
    cores_after = procstats.core_busy_seconds()
    cpu_after = {**_snapshot(watch), "loadgen": time.process_time()}
    done = len(samples.total)
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    return {
        "name": phase["name"],
        "kind": "load",
        "concurrency": phase["concurrency"],
        "requests_ok": done,
        "errors": samples.errors,
        "first_error": samples.first_error,
        "elapsed_s": round(elapsed, 4),
        "rps": round(done / elapsed, 1) if elapsed else 0.0,
        "ttft_ms": summary_ms(samples.ttft),
        "gap_ms": summary_ms(samples.gaps),
        "total_ms": summary_ms(samples.total),
        "cpu_s": {name: round(value, 3) for name, value in cpu.items()},
        "cpu_s_per_1k": {
            name: round(value * 1000 / done, 4) if done else None for name, value in cpu.items()
        },
        # Share of one core each process used: shows which side ran out of CPU.
        "core_use": {
            name: round(value / elapsed, 2) if elapsed else None for name, value in cpu.items()
        },
        # How busy each core was, whoever ran on it: more than the processes above add up
        # to means something else on the machine competed with the benchmark.
        "core_busy": {
            core: round((cores_after[core] - cores_before[core]) / elapsed, 2) if elapsed else None
            for core in cores_after
        },
        "peak_rss_mb": {
            name: round(procstats.peak_rss_bytes(pid) / 2**20, 1) for name, pid in watch.items()
        },
        "peak_rss_since_reset": peaks_reset,
    }


async def _hold_one(target: Target, raw: bytes) -> Connection | None:
    """Open one stream and return its connection once the first token arrived."""
    try:
        conn = await connect(target.host, target.port)
    except OSError:
        return None
    conn.on_first_marker = asyncio.get_running_loop().create_future()
    answer = conn.request(raw, target.markers)
    answer.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "unretrieved"
    first = conn.on_first_marker
    waiting: list[asyncio.Future[Any]] = [first, answer]
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        conn.close()  # the phase ran out of time before this stream started
        raise
    if first.done() and not answer.done():
        return conn
    conn.close()
    return None


async def _open_streams(target: Target, raw: bytes, count: int, seconds: float) -> list[Connection]:
    """Up to ``count`` streams held open, opened in batches until ``seconds`` run out."""
    held: list[Connection] = []
    deadline = time.perf_counter() + seconds
    for start in range(0, count, _HOLD_BATCH):
        tasks = [
            asyncio.create_task(_hold_one(target, raw))
            for _ in range(min(_HOLD_BATCH, count - start))
        ]
        done, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        held += [conn for task in done if (conn := task.result()) is not None]
        if late:
            break  # a slow gateway is measured on the streams it managed to open in time
    return held


async def hold_phase(
    target: Target, phase: dict[str, Any], watch: dict[str, int]
) -> dict[str, Any]:
    """Hold ``streams`` streams open and idle; report memory per stream of each process."""
    # An idle gateway has served requests already: imports, caches and pools are warm.
    warm = {"body": phase["warmup_body"], "requests": 50, "concurrency": 4, "max_seconds": 10}
    await run_load(target, warm)
    await asyncio.sleep(0.5)
    idle = {name: procstats.rss_bytes(pid) for name, pid in watch.items()}
    raw = target.request(phase["body"].encode())
    held = await _open_streams(target, raw, phase["streams"], phase["max_seconds"])
    await asyncio.sleep(1.0)  # let allocations settle before reading memory
    rss = {name: procstats.rss_bytes(pid) for name, pid in watch.items()}
    for conn in held:
        conn.close()
    await asyncio.sleep(0.5)  # the gateway sees the clients leave and cancels upstream calls
    ok = len(held)
    return {
        "name": phase["name"],
        "kind": "hold",
        "streams_open": ok,
        "errors": phase["streams"] - ok,
        "idle_rss_mb": {name: round(value / 2**20, 1) for name, value in idle.items()},
        "held_rss_mb": {name: round(value / 2**20, 1) for name, value in rss.items()},
        "rss_kb_per_stream": {
            name: round((rss[name] - idle[name]) / 1024 / ok, 2) if ok else None for name in watch
        },
    }


async def run(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every phase of ``spec`` in order."""
    target = Target(spec["url"], spec["headers"], spec["chunks"], spec["end"].encode())
    watch = {name: int(pid) for name, pid in spec["watch"].items()}
    results = []
    for phase in spec["phases"]:
        kind = phase.get("kind", "load")
        runner = hold_phase if kind == "hold" else load_phase
        results.append(await runner(target, phase, watch))
    return results


def main() -> None:
    """Read the spec on stdin, print the results as one JSON line."""
    spec = json.load(sys.stdin)
    print(json.dumps(run_fast(run(spec))), flush=True)


if __name__ == "__main__":
    main()
