"""Results -> the comparison table, the target checks and the README section."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Run = dict[str, Any]
README_START = "<!-- bench-results:start -->"
README_END = "<!-- bench-results:end -->"
WORKERS_TARGETS = ("aichat-w1", "aichat-w2")
GATEWAYS = (
    "aichat",
    "aichat-muted",
    "aichat-traced",
    "floor",
    "hop",
    *WORKERS_TARGETS,
    "litellm",
    "litellm-rust",
)
# Issue 16's limits: aichat at its defaults against the floor, in the same run.
CPU_VS_FLOOR = {"aichats": 1.5, "openai": 1.25}  # CPU per request, at most
# Issue 23's, for the coding agents' requests (CPU per request only): untranslated, translated.
AGENT_CPU_VS_FLOOR = {
    "messages-native": 1.5,
    "responses-native": 1.5,
    "messages-chat": 2.5,
    "responses-chat": 2.5,
}
RPS_VS_FLOOR = 0.9  # requests/s at c16 and c64, at least
TTFT_ADDED_VS_FLOOR = {"p50": 0.1, "p99": 0.3}  # ms, at most
REST_RSS_MB = 60.0  # an OpenAI-only aichat, just started
HELD_STREAMS_MB = 50.0  # 1,000 idle open streams, on top of the idle gateway
WORKERS_SPEEDUP = 1.7  # two workers on two cores vs one
_HEADER = (
    "| scenario | via | req/s c16 | req/s c64 | TTFT p50 ms | TTFT p99 ms | gap p99 ms "
    "| CPU s/1k req | peak RSS MB | idle stream KB |"
)


def find_run(runs: list[Run], provider: str, mode: str, target: str) -> Run | None:
    """The run of one scenario against one target, if it was measured."""
    for run in runs:
        if (run["provider"], run["mode"], run["target"]) == (provider, mode, target):
            return run
    return None


def phase(run: Run | None, name: str) -> dict[str, Any] | None:
    """One phase's results within a run."""
    if run is None:
        return None
    return next((p for p in run["phases"] if p["name"] == name), None)


def server_of(run: Run) -> str:
    """The process whose CPU and memory count: the gateway, or the upstream when direct."""
    return "upstream" if run["target"] == "direct" else "gateway"


def value(run: Run | None, phase_name: str, *path: str) -> float | None:
    """A figure by path within a phase (``"server"`` picks the run's server process)."""
    found: Any = phase(run, phase_name)
    for key in path:
        if found is None:
            return None
        found = found.get(server_of(run) if key == "server" and run else key)
    return float(found) if isinstance(found, int | float) else None


def _fmt(number: float | None, digits: int) -> str:
    return "-" if number is None else f"{number:,.{digits}f}"


def _ratio(ours: float | None, base: float | None) -> str:
    return "" if ours is None or not base else f" ({ours / base:.2f}x)"


def _added(ours: float | None, base: float | None) -> str:
    return "" if ours is None or base is None else f" ({ours - base:+.2f})"


def _nothing(ours: float | None, base: float | None) -> str:
    return ""


def _row_cells(run: Run, direct: Run | None) -> list[str]:
    """One table row: each figure, and beside it how it compares with the direct run."""
    compare = direct is not None and run is not direct
    cells = []
    for name, path, digits, how in (
        ("rps_c16", ("rps",), 0, _ratio),
        ("rps_c64", ("rps",), 0, _ratio),
        ("ttft_c1", ("ttft_ms", "p50"), 3, _added),
        ("ttft_c1", ("ttft_ms", "p99"), 3, _added),
        ("gap_c1", ("gap_ms", "p99"), 3, _added),
        ("rps_c16", ("cpu_s_per_1k", "server"), 3, _ratio),
        ("rps_c64", ("peak_rss_mb", "server"), 1, _ratio),
        # The upstream's memory per held stream is near zero: no ratio worth printing.
        ("hold", ("rss_kb_per_stream", "server"), 1, _nothing),
    ):
        ours = value(run, name, *path)
        text = _fmt(ours, digits)
        if compare:
            text += how(ours, value(direct, name, *path))
        cells.append(text)
    return cells


def table(runs: list[Run], skipped: list[dict[str, str]]) -> str:
    """Markdown: per scenario, the direct upstream then each gateway, compared with direct."""
    lines = [_HEADER, "|" + "---|" * 10]
    for provider, mode in _scenarios(runs, skipped):
        direct = find_run(runs, provider, mode, "direct")
        for target in ("direct", *GATEWAYS):
            run = find_run(runs, provider, mode, target)
            if run is not None:
                cells = _row_cells(run, direct)
                lines.append(f"| {provider} {mode} | {target} | " + " | ".join(cells) + " |")
        for skip in skipped:
            if (skip["provider"], skip.get("mode", mode)) == (provider, mode):
                lines.append(
                    f"| {provider} {mode} | {skip['target']} | skipped: {skip['reason']} |"
                    + " |" * 7
                )
    return "\n".join(lines)


def _scenarios(runs: list[Run], skipped: list[dict[str, str]]) -> Iterator[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for item in [*runs, *skipped]:
        key = (item["provider"], item.get("mode", "stream"))
        if key not in seen:
            seen.append(key)
    yield from seen


def _check(name: str, measured: float | None, limit: float, at_least: bool) -> dict[str, Any]:
    passed = None if measured is None else (measured >= limit if at_least else measured <= limit)
    return {"target": name, "measured": measured, "limit": limit, "pass": passed}


def _compare(
    runs: list[Run], provider: str, mode: str, targets: tuple[str, str], *path: str
) -> tuple[float | None, float | None]:
    """One figure (phase name, then keys) of a scenario through two targets: ours, base."""
    ours, base = (value(find_run(runs, provider, mode, target), *path) for target in targets)
    return ours, base


def _ratio_of(ours: float | None, base: float | None) -> float | None:
    return None if ours is None or not base else round(ours / base, 3)


def _scenario_checks(runs: list[Run], provider: str, mode: str) -> list[dict[str, Any]]:
    """aichat against the floor in one scenario: CPU per request, throughput, TTFT."""
    pair = ("aichat", "floor")
    where = f"{provider} {mode}"
    cpu = _ratio_of(*_compare(runs, provider, mode, pair, "rps_c16", "cpu_s_per_1k", "server"))
    name = f"{where}: CPU per request, aichat / floor"
    if provider in AGENT_CPU_VS_FLOOR:
        return [_check(name, cpu, AGENT_CPU_VS_FLOOR[provider], False)]
    checks = [_check(name, cpu, CPU_VS_FLOOR[provider], False)]
    for phase_name in ("rps_c16", "rps_c64"):
        rps = _ratio_of(*_compare(runs, provider, mode, pair, phase_name, "rps"))
        checks.append(_check(f"{where} {phase_name}: aichat / floor", rps, RPS_VS_FLOOR, True))
    for pct, limit in TTFT_ADDED_VS_FLOOR.items():
        ours, base = _compare(runs, provider, mode, pair, "ttft_c1", "ttft_ms", pct)
        added = None if ours is None or base is None else round(ours - base, 4)
        checks.append(_check(f"{where}: TTFT {pct} over the floor (ms)", added, limit, False))
    return checks


def targets(
    runs: list[Run], rest_rss_mb: dict[str, float | None] | None = None
) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met."""
    checks = []
    for provider in (*CPU_VS_FLOOR, *AGENT_CPU_VS_FLOOR):
        for mode in ("stream", "whole"):
            if find_run(runs, provider, mode, "aichat") and find_run(runs, provider, mode, "floor"):
                checks += _scenario_checks(runs, provider, mode)
        hold = phase(find_run(runs, provider, "stream", "aichat"), "hold")
        if hold is not None:
            per_stream = hold["rss_kb_per_stream"].get("gateway")
            mb = None if per_stream is None else round(per_stream * 1000 / 1024, 1)
            checks.append(
                _check(f"{provider}: RSS of 1,000 idle streams (MB)", mb, HELD_STREAMS_MB, False)
            )
    rest = (rest_rss_mb or {}).get("aichat openai")
    if rest is not None:
        checks.append(_check("OpenAI-only aichat at rest: RSS (MB)", rest, REST_RSS_MB, False))
    for mode in ("stream", "whole"):
        for phase_name in ("rps_c16", "rps_c64"):
            pair = (WORKERS_TARGETS[1], WORKERS_TARGETS[0])
            speedup = _ratio_of(*_compare(runs, "openai", mode, pair, phase_name, "rps"))
            if speedup is not None:
                name = f"openai {mode} {phase_name}: 2 workers / 1"
                checks.append(_check(name, speedup, WORKERS_SPEEDUP, True))
    return checks


def targets_table(checks: list[dict[str, Any]]) -> str:
    """Markdown: each target, its measured value and pass/fail."""
    lines = ["| target | measured | limit | met |", "|---|---|---|---|"]
    for check in checks:
        met = {True: "yes", False: "**no**", None: "-"}[check["pass"]]
        measured = "-" if check["measured"] is None else f"{check['measured']:g}"
        lines.append(f"| {check['target']} | {measured} | {check['limit']:g} | {met} |")
    return "\n".join(lines)


def background_load(runs: list[Run]) -> dict[str, float] | None:
    """Mean share of each core used by processes other than the benchmark's, over all load
    phases: the gateway alone should be on core 0, the upstream and load generator on 1."""
    others: dict[str, list[float]] = {"cpu0": [], "cpu1": []}
    for run in runs:
        if run["target"] in WORKERS_TARGETS:
            continue  # their processes spread over both cores: no split to check
        for found in run["phases"]:
            busy, used = found.get("core_busy") or {}, found.get("core_use") or {}
            if "cpu0" not in busy or "cpu1" not in busy:
                continue
            others["cpu0"].append(busy["cpu0"] - used.get("gateway", 0.0))
            others["cpu1"].append(busy["cpu1"] - used.get("upstream", 0) - used.get("loadgen", 0))
    if not others["cpu0"]:
        return None
    return {core: round(max(0.0, sum(v) / len(v)), 2) for core, v in others.items()}


def render(result: dict[str, Any]) -> str:
    """The full report: machine line, comparison table, target checks and notes."""
    machine = result["machine"]
    setup = result["setup"]
    head = (
        f"Run `{result['suite']}` on {result['date']}: {machine['cpu']}, {machine['cores']} "
        f"cores, Linux {machine['kernel']}, Python {machine['python']}, {setup['pinning']}; "
        f"nice {setup.get('niceness', 0)}; tools on {setup['tools_loop']}; "
        f"aichat {setup['aichat']}."
    )
    notes = [
        f"Answers of {setup['chunks']} chunks; gaps measured with the upstream pacing chunks "
        f"{setup['pace_ms']:g} ms apart. Figures in brackets compare with `direct` (x: ratio, "
        "or ± ms added). CPU and memory are the gateway's; on `direct` rows the fake upstream's.",
        "The aichats protocol only streams: its `whole` direct row is the upstream stream.",
    ]
    if any(run["target"] == "floor" for run in result["runs"]):
        notes.append(
            "`floor` (`bench/floor.py`): aiohttp server and one ClientSession on uvloop, "
            "forwarding the upstream's bytes untranslated, with no validation, auth, limits or "
            "logs: not a usable gateway, the least this design can cost. Between `floor` and "
            "`aichat` is aichat's own work."
        )
    if any(run["provider"] in AGENT_CPU_VS_FLOOR for run in result["runs"]):
        notes.append(
            "`messages-*` / `responses-*` (`bench/agents.py`): the recorded Claude Code "
            "(Messages) and Codex (Responses) requests, 40-50 KB, `ttft_c1` and `rps_c16` "
            "only; `-native` to an upstream of the same API (untranslated), `-chat` to a "
            "Chat Completions upstream (translated). `direct` and `floor` are the request "
            "in the agent's API to an upstream of that API."
        )
    if any(run["target"] == "hop" for run in result["runs"]):
        notes.append(
            "`hop` (`bench/hop.py`): a proxy on bare asyncio protocols, no HTTP library, passing "
            "request and answer bytes through unchanged: what the extra hop alone adds. It "
            "forwards each read as it comes, so its client gets more, smaller reads: its TTFT is "
            "the point, not its requests/s."
        )
    litellm = (result.get("peers") or {}).get("litellm")
    if litellm and any(run["target"] == "litellm" for run in result["runs"]):
        notes.append(
            f"LiteLLM {litellm}: its proxy (`litellm --config`) with default settings, one "
            "model routed to the same fake upstream; one round, each phase cut at 5 s."
        )
    rest = result.get("rest_rss_mb") or {}
    if rest:
        notes.append(
            "Memory at rest (VmRSS once ready, before any API request), MB: "
            + ", ".join(f"{name} {mb:.1f}" for name, mb in rest.items() if mb is not None)
            + "."
        )
    if rest.get("aichat aichats") and rest.get("aichat openai"):
        tokenizer = rest["aichat aichats"] - rest["aichat openai"]
        notes.append(
            f"The o200k tokenizer, loaded only where a route counts tokens itself (aichats, "
            f"mock), is most of the {tokenizer:.0f} MB between the two aichat configurations."
        )
    if any(run["target"] == "aichat-muted" for run in result["runs"]):
        notes.append(
            "`aichat` runs at its defaults (access log at INFO, to a file; Server-Timing; "
            "limits in memory); `aichat-muted` is the same with the access log off "
            "(`AICHAT_LOG_LEVEL=WARNING`), one round, for comparison."
        )
    if any(run["target"] == "aichat-traced" for run in result["runs"]):
        notes.append(
            "`aichat-traced` is `aichat` with every request traced "
            "(`OTEL_TRACES_SAMPLER=always_on`): a server span and an upstream attempt span "
            "each, exported over OTLP/HTTP to the fake upstream, one round."
        )
    if any(run["target"] == "aichat-w2" for run in result["runs"]):
        notes.append(
            f"`aichat-w1` / `aichat-w2`: `aichat serve --workers 1` / `2`, OpenAI only, "
            f"throughput phases, rounds alternating; {setup.get('workers_pinning', '')}. "
            "Where the load generator shares the workers' cores, the ratio understates "
            "what a second worker gives a gateway whose clients are elsewhere."
        )
    noise = result.get("background_load")
    if noise is not None:
        notes.append(
            f"Other processes on the machine used on average {noise['cpu0']:.0%} of core 0 and "
            f"{noise['cpu1']:.0%} of core 1 during the load phases (0% on a quiet machine)."
        )
    notes += [
        f"{run['provider']} via {run['target']}: only {held['streams_open']} of "
        f"{held['streams_open'] + held['errors']} streams opened in time (memory is per stream)."
        for run in result["runs"]
        if (held := phase(run, "hold")) is not None and held["errors"]
    ]
    notes += [
        f"{s['provider']} {s['mode']} via {s['target']}: {s['reason']}" for s in result["skipped"]
    ]
    tables = [table(result["runs"], result["skipped"]), targets_table(result["targets"])]
    return "\n\n".join([head, *tables, "\n".join(f"- {note}" for note in notes)])


def update_readme(readme: Path, text: str) -> None:
    """Replace the results section of ``readme`` (between its markers) with ``text``."""
    content = readme.read_text()
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    section = f"{README_START}\n{text}\n{README_END}"
    if pattern.search(content):
        content = pattern.sub(lambda _: section, content)
    else:
        content = content.rstrip("\n") + "\n\n" + section + "\n"
    readme.write_text(content)


def main() -> None:
    """``python -m bench.report RESULTS.json [--update-readme]``: print (and save) the table."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", type=Path)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    text = render(json.loads(args.results.read_text()))
    print(text)
    if args.update_readme:
        update_readme(Path(__file__).parent / "README.md", text)


if __name__ == "__main__":
    main()
