"""The benchmark driver: ``python -m bench.run [--suite full|quick]``.

Starts the fake upstream, then for each provider a fresh aichat (and LiteLLM when
``make bench-peers`` installed it), runs every scenario against the upstream directly and
through each gateway, writes ``bench/results/<date>-<suite>.json`` and prints the table.
Every process is stopped at the end, whatever happens; every phase is bounded in requests
and in time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from bench import procstats, report
from bench.agents import AGENTS
from bench.gateways import (
    BARE_PROXIES,
    MODES,
    AichatOptions,
    Gateway,
    NotMeasured,
    litellm_available,
    litellm_version,
    start_aichat,
    start_bare_proxy,
    start_litellm,
)
from bench.loops import loop_name
from bench.procs import (
    TOOLS_CORE,
    WORKERS_CORES,
    Cores,
    Proc,
    can_pin,
    pin_self,
    run_loadgen,
    start,
    start_upstream,
    workers_tools_cores,
)
from bench.suite import CHUNKS, PACE_MS, PROVIDERS, SUITES, Suite, request_target

BENCH_DIR = Path(__file__).parent
RESULTS_DIR = BENCH_DIR / "results"
PEER_MAX_SECONDS = 5.0
STREAMS_FD_NEED = 8192  # 1,000 held streams: a socket each at client, gateway (x2), upstream


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cpu_slug() -> str:
    """``intel-xeon-processor``: in result file names, so that runs on the different
    machines a project gets on one day never overwrite each other."""
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"\(r\)|\(tm\)", "", _cpu_model().lower())).strip("-")


def _git(*args: str) -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    done = subprocess.run(  # noqa: S603 (fixed argv, no shell)
        [git, *args], capture_output=True, text=True, check=False, cwd=BENCH_DIR
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
    }


def wait_for_quiet(max_seconds: float, threshold: float = 0.15) -> float:
    """Wait (up to ``max_seconds``) for a second in which no core is busier than ``threshold``.

    On a shared machine other work skews every figure; starting in a quiet moment helps,
    and the report shows how busy the machine was anyway. Returns the last busiest share.
    """
    deadline = time.monotonic() + max_seconds
    while True:
        before = procstats.core_busy_seconds()
        time.sleep(1.0)
        after = procstats.core_busy_seconds()
        busiest = max(after[core] - before[core] for core in after)
        if busiest <= threshold or time.monotonic() >= deadline:
            return round(busiest, 2)


def raise_priority(niceness: int = -10) -> int:
    """Run this driver, and so every process it starts, at ``niceness`` when allowed (root).

    On a shared machine other work competes for the pinned cores; a higher priority makes
    the scheduler favour the benchmark's processes, the gateway and the direct upstream
    alike. Returns the niceness in force.
    """
    with suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    return os.getpriority(os.PRIO_PROCESS, 0)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = STREAMS_FD_NEED if hard == resource.RLIM_INFINITY else min(hard, STREAMS_FD_NEED)
    if soft < wanted:
        # Children inherit it: the gateway and the upstream need a socket per held stream.
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class Bench:
    """One benchmark run: its processes, its suite and what it has measured so far."""

    def __init__(
        self, suite: Suite, work: Path, upstream: Proc, modes: tuple[str, ...] = MODES
    ) -> None:
        self.suite = suite
        self.modes = modes
        self.work = work
        self.upstream = upstream
        self.runs: list[dict[str, Any]] = []
        self.skipped: list[dict[str, str]] = []
        self.rest_rss_mb: dict[str, float | None] = {}
        # The workers scenario changes these two while it runs.
        self.loadgen_cores: Cores = TOOLS_CORE
        self.throughput_only = False

    def measure(
        self, provider: str, mode: str, target: str, url: str, watch: dict[str, int]
    ) -> None:
        """All load phases of one scenario against one target (upstream or a gateway)."""
        stream = mode == "stream"
        fields, body_for = request_target(provider, stream, url, direct=target == "direct")
        spec = {**fields, "chunks": CHUNKS, "watch": watch}
        agent = provider in AGENTS
        spec["phases"] = self.suite.phases(stream, body_for, self.throughput_only, agent)
        print(f"  {provider:8} {mode:6} {target:8}", end="", flush=True)
        timeout = self._timeout(len(spec["phases"]))
        self._add(provider, mode, target, run_loadgen(spec, timeout, self.loadgen_cores))

    def started(self, gateway: Gateway) -> Gateway:
        """Note a gateway's memory at rest, by name and providers (the first counts)."""
        self.rest_rss_mb.setdefault(
            f"{gateway.name} {'/'.join(gateway.providers)}", gateway.rest_rss_mb
        )
        return gateway

    def measure_hold(self, provider: str, target: str, url: str, watch: dict[str, int]) -> None:
        """Memory per idle open stream, above the same process idle after its load phases."""
        fields, body_for = request_target(provider, True, url, direct=target == "direct")
        spec = {**fields, "chunks": CHUNKS, "watch": watch}
        spec["phases"] = [self.suite.hold_phase(body_for)]
        print(f"  {provider:8} hold   {target:8}", end="", flush=True)
        self._add(provider, "stream", target, run_loadgen(spec, timeout=self._timeout(2)))

    def _timeout(self, phases: int) -> float:
        # Warm-up, the bounded phases and process start: anything beyond is a hang.
        return phases * (self.suite.max_seconds * 2 + 30) + 60

    def _add(self, provider: str, mode: str, target: str, phases: list[dict[str, Any]]) -> None:
        run = report.find_run(self.runs, provider, mode, target)
        if run is None:
            run = {"provider": provider, "mode": mode, "target": target, "phases": []}
            self.runs.append(run)
        for new in phases:
            _keep_best(run["phases"], new)
        print("  " + "  ".join(_brief(p) for p in phases), flush=True)

    def _measured(self, provider: str, mode: str, target: str, phase_name: str) -> bool:
        run = report.find_run(self.runs, provider, mode, target)
        return report.phase(run, phase_name) is not None

    def skip(self, provider: str, target: str, reason: str) -> None:
        """Record that a scenario could not be run, with the reason for the table."""
        for mode in self.modes:
            self.skipped.append(
                {"provider": provider, "mode": mode, "target": target, "reason": reason}
            )
        print(f"  {provider:8} {'':6} {target:8}  skipped: {reason}", flush=True)

    def load_scenarios(self, gateway: Gateway, provider: str, modes: tuple[str, ...]) -> None:
        """The load phases of each mode, direct then via the gateway, round after round.

        Direct is measured with the first gateway only; later ones compare with it.
        """
        up = {"upstream": self.upstream.pid}
        via = {"gateway": gateway.proc.pid, **up}
        for mode in modes:
            direct_done = self._measured(provider, mode, "direct", "rps_c16")
            # Rounds alternate direct and gateway, so slow spells hit both alike.
            for _ in range(self.suite.rounds):
                if not direct_done:
                    self.measure(provider, mode, "direct", self.upstream.url, up)
                self.measure(provider, mode, gateway.name, gateway.proc.url, via)

    def hold_scenario(self, gateway: Gateway, provider: str) -> None:
        """Memory per idle open stream, direct (once) and via the gateway.

        After every load phase that could follow it: 1,000 streams closing at once leave
        the processes and the kernel (thousands of sockets in TIME_WAIT) slower for ten
        seconds or more.
        """
        up = {"upstream": self.upstream.pid}
        if not self._measured(provider, "stream", "direct", "hold"):
            self.measure_hold(provider, "direct", self.upstream.url, up)
        self.measure_hold(
            provider, gateway.name, gateway.proc.url, {"gateway": gateway.proc.pid, **up}
        )


def _keep_best(phases: list[dict[str, Any]], new: dict[str, Any]) -> None:
    """Add a phase's result; of repeated rounds keep the fastest, and every round's rate.

    Best-of-rounds because noise on a shared machine only ever slows a round down.
    """
    old = next((p for p in phases if p["name"] == new["name"]), None)
    if old is None:
        new["rounds_rps"] = [new.get("rps")]
        phases.append(new)
        return
    new["rounds_rps"] = [*old["rounds_rps"], new.get("rps")]
    if new.get("rps", 0) > old.get("rps", 0):
        phases[phases.index(old)] = new
    else:
        old["rounds_rps"] = new["rounds_rps"]


def _brief(phase: dict[str, Any]) -> str:
    if phase["kind"] == "hold":
        per = phase["rss_kb_per_stream"]
        return f"hold {phase['streams_open']} streams " + " ".join(
            f"{k}={v}KB" for k, v in per.items()
        )
    errors = f" ERR={phase['errors']}" if phase["errors"] else ""
    return f"{phase['name']}={phase['rps']:.0f}/s{errors}"


@contextmanager
def running(proc_or_gateway: Proc | Gateway) -> Iterator[None]:
    """Stop the process when the block ends, however it ends."""
    proc = proc_or_gateway.proc if isinstance(proc_or_gateway, Gateway) else proc_or_gateway
    try:
        yield
    finally:
        proc.stop()


@contextmanager
def profiled(gateway: Gateway, out: Path | None) -> Iterator[None]:
    """Sample the gateway with py-spy (on the tools' core) while the block runs."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if out is None or not Path(spy).exists():
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_name(f"{out.name}-{gateway.name}-{gateway.proc.pid}.txt")
    cmd = [spy, "record", "--pid", str(gateway.proc.pid), "--format", "raw", "--rate", "250"]
    proc = start("py-spy", [*cmd, "-o", str(path)], core=1, url="", log_dir=path.parent)
    try:
        yield
    finally:
        proc.popen.send_signal(signal.SIGINT)  # py-spy writes its output, then exits
        with suppress(subprocess.TimeoutExpired):
            proc.popen.wait(30)
        proc.stop()
        print(f"  profile: {path}", flush=True)


def run_all(bench: Bench, args: argparse.Namespace) -> None:
    """Per provider: aichat (a fresh gateway each), aichat with its access log muted, with
    every request traced, the
    floor and the hop for scale, then aichat's hold test (for the agents' scenarios aichat
    and the floor alone); then the workers scenario; then
    LiteLLM's load phases and hold test (and its Rust path's), if it is installed.
    """
    for provider in args.providers:
        _aichat_rows(bench, provider, args)
    if "openai" in args.providers:
        _workers_rows(bench, args)
    if args.no_peers or "openai" not in args.providers:
        return
    if not litellm_available():
        bench.skip("openai", "litellm", "not installed (make bench-peers)")
        return
    # A peer a few times slower would take most of the time budget: one round, and each
    # phase cut at PEER_MAX_SECONDS (its rate is measured on what it did).
    bench.suite = replace(
        bench.suite, rounds=1, max_seconds=min(bench.suite.max_seconds, PEER_MAX_SECONDS)
    )
    for rust in (False, True):
        name = "litellm-rust" if rust else "litellm"
        with _failures_skipped(bench, "openai", name):
            peer = bench.started(start_litellm(bench.upstream.url, bench.work, rust=rust))
            with running(peer):
                bench.load_scenarios(peer, "openai", args.modes)
                if "stream" in args.modes:
                    bench.hold_scenario(peer, "openai")


def _aichat_rows(bench: Bench, provider: str, args: argparse.Namespace) -> None:
    """aichat at its defaults, round after round with direct; the rows for comparison and
    scale (one round each); then aichat's hold test."""
    options = AichatOptions(provider, args.gateway_pythonpath)
    with _failures_skipped(bench, provider, "aichat"):
        gateway = start_aichat(bench.upstream.url, bench.work, options)
        if gateway is None:
            bench.skip(provider, "aichat", "provider not available in this aichat")
            return
        with running(bench.started(gateway)):
            with profiled(gateway, args.profile):
                bench.load_scenarios(gateway, provider, args.modes)
            if provider in AGENTS:  # CPU per request against the floor, nothing else
                _one_round(bench, provider, "floor", args.modes)
                return
            # Before the hold test, which slows whatever follows it.
            muted = replace(options, muted=True)
            _one_round(bench, provider, "aichat-muted", args.modes, muted)
            traced = replace(options, traced=True)
            _one_round(bench, provider, "aichat-traced", args.modes, traced)
            for name, (providers, modes) in BARE_PROXIES.items():
                if provider in providers:
                    _one_round(bench, provider, name, tuple(m for m in modes if m in args.modes))
            if "stream" in args.modes:
                bench.hold_scenario(gateway, provider)


def _one_round(
    bench: Bench,
    provider: str,
    name: str,
    modes: tuple[str, ...],
    aichat: AichatOptions | None = None,
) -> None:
    """One round of load phases through ``name``: an aichat started with ``aichat``, or the
    bare proxy ``name``."""
    with _failures_skipped(bench, provider, name):
        if aichat is None:
            gateway: Gateway | None = start_bare_proxy(name, bench.upstream.url, bench.work)
        else:
            gateway = start_aichat(bench.upstream.url, bench.work, aichat)
        if gateway is None:
            return
        suite, bench.suite = bench.suite, replace(bench.suite, rounds=1)
        try:
            with running(bench.started(gateway)):
                bench.load_scenarios(gateway, provider, modes)
        finally:
            bench.suite = suite


def _workers_rows(bench: Bench, args: argparse.Namespace) -> None:
    """OpenAI pass-through throughput of aichat with one worker and with two, both on the
    same two cores (``WORKERS_CORES``), rounds alternating between them; the load generator
    on ``workers_tools_cores()``."""
    first = AichatOptions("openai", args.gateway_pythonpath, cores=WORKERS_CORES)
    bench.loadgen_cores, bench.throughput_only = workers_tools_cores(), True
    try:
        with _failures_skipped(bench, "openai", "aichat-w2"), ExitStack() as stack:
            pair: list[Gateway] = []
            for options in (first, replace(first, workers=2)):
                gateway = start_aichat(bench.upstream.url, bench.work, options)
                if gateway is None:
                    return
                stack.enter_context(running(bench.started(gateway)))
                pair.append(gateway)
            up = {"upstream": bench.upstream.pid}
            for mode in args.modes:
                for _ in range(bench.suite.rounds):
                    for gateway in pair:
                        via = {"gateway": gateway.proc.pid, **up}
                        bench.measure("openai", mode, gateway.name, gateway.proc.url, via)
    finally:
        bench.loadgen_cores, bench.throughput_only = TOOLS_CORE, False


@contextmanager
def _failures_skipped(bench: Bench, provider: str, target: str) -> Iterator[None]:
    """A gateway that fails to start or breaks mid-run costs its rows, not the whole run."""
    try:
        yield
    except NotMeasured as exc:
        bench.skip(provider, target, str(exc))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"\n{exc}", file=sys.stderr)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        bench.skip(provider, target, f"failed: {reason}")


def _aichat_source(pythonpath: str | None) -> str:
    """Which aichat was measured: this checkout's commit, or the tree given instead."""
    if pythonpath:
        return f"from {pythonpath}"
    dirty = "+dirty" if _git("status", "--porcelain", "--", "aichat") else ""
    return _git("rev-parse", "--short", "HEAD") + dirty


def _listed(cores: tuple[int, ...]) -> str:
    return ",".join(map(str, cores))


def _setup(suite: Suite, pythonpath: str | None) -> dict[str, Any]:
    return {
        "pinning": "gateway on core 0, upstream and load generator on core 1"
        if can_pin()
        else "NOT pinned (fewer than 2 cores or no taskset)",
        "workers_pinning": f"workers scenario: gateway on cores {_listed(WORKERS_CORES)}, "
        f"load generator on {_listed(workers_tools_cores())}, upstream on core {TOOLS_CORE}"
        if can_pin()
        else "workers scenario NOT pinned",
        "tools_loop": loop_name(),
        "aichat": _aichat_source(pythonpath),
        "chunks": CHUNKS,
        "pace_ms": PACE_MS,
        "suite": suite.__dict__,
    }


def _names(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated subset of ``allowed``."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        unknown = set(names) - set(allowed)
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
        return names

    return parse


def main() -> int:
    """Run the suite, save the JSON and print the table (missed targets show in it)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", choices=sorted(SUITES), default="full")
    parser.add_argument("--gateway-pythonpath", help="run aichat from this source tree instead")
    parser.add_argument("--providers", type=_names(PROVIDERS), default=PROVIDERS)
    parser.add_argument("--modes", type=_names(MODES), default=MODES)
    parser.add_argument("--no-peers", action="store_true", help="skip LiteLLM even if installed")
    parser.add_argument("--profile", type=Path, help="py-spy raw profiles to PATH-<gateway>-*.txt")
    parser.add_argument("--update-readme", action="store_true", help="write bench/README.md table")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/...)")
    parser.add_argument(
        "--wait-quiet", type=float, default=0, metavar="S", help="wait up to S s for idle cores"
    )
    args = parser.parse_args()
    suite = SUITES[args.suite]
    pin_self()
    niceness = raise_priority()
    _raise_fd_limit()
    if args.wait_quiet:
        print(f"waiting up to {args.wait_quiet:g} s for a quiet machine...", flush=True)
        print(f"busiest core at start: {wait_for_quiet(args.wait_quiet):.0%}", flush=True)
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="aichat-bench-") as tmp:
        work = Path(tmp)
        upstream = start_upstream(work)
        with running(upstream):
            bench = Bench(suite, work, upstream, args.modes)
            print(f"bench {suite.name}: upstream {upstream.url}", flush=True)
            run_all(bench, args)
    result = {
        "suite": suite.name,
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
        "machine": machine(),
        "setup": {**_setup(suite, args.gateway_pythonpath), "niceness": niceness},
        "peers": {"litellm": litellm_version()},
        "runs": bench.runs,
        "skipped": bench.skipped,
        "rest_rss_mb": bench.rest_rss_mb,
        "targets": report.targets(bench.runs, bench.rest_rss_mb),
        "background_load": report.background_load(bench.runs),
    }
    out = args.out or RESULTS_DIR / f"{started:%Y-%m-%d}-{suite.name}-{_cpu_slug()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    text = report.render(result)
    print("\n" + text + f"\n\nResults: {out} ({result['duration_s']} s)")
    if args.update_readme:
        report.update_readme(BENCH_DIR / "README.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
