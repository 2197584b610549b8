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
GATEWAYS = ("aichat", "floor", "hop", "litellm")
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
    passed = None if measured is None else (measured >= limit if at_least else measured < limit)
    return {"target": name, "measured": measured, "limit": limit, "pass": passed}


def _rps_ratio(runs: list[Run], provider: str, phase_name: str, base: str) -> float | None:
    ours = value(find_run(runs, provider, "stream", "aichat"), phase_name, "rps")
    theirs = value(find_run(runs, provider, "stream", base), phase_name, "rps")
    return None if ours is None or not theirs else round(ours / theirs, 3)


def _added_ms(runs: list[Run], provider: str, phase_name: str, *path: str) -> float | None:
    ours = value(find_run(runs, provider, "stream", "aichat"), phase_name, *path)
    base = value(find_run(runs, provider, "stream", "direct"), phase_name, *path)
    return None if ours is None or base is None else round(ours - base, 4)


def targets(runs: list[Run]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met."""
    checks = []
    for provider in ("aichats", "openai"):
        if find_run(runs, provider, "stream", "aichat") is None:
            continue
        for phase_name in ("rps_c16", "rps_c64"):
            ratio = _rps_ratio(runs, provider, phase_name, "direct")
            checks.append(
                _check(f"{provider} stream {phase_name}: aichat / direct", ratio, 0.9, True)
            )
            if find_run(runs, provider, "stream", "litellm") is not None:
                ratio = _rps_ratio(runs, provider, phase_name, "litellm")
                checks.append(
                    _check(f"{provider} stream {phase_name}: aichat / LiteLLM", ratio, 20, True)
                )
        p50 = _added_ms(runs, provider, "ttft_c1", "ttft_ms", "p50")
        p99 = _added_ms(runs, provider, "ttft_c1", "ttft_ms", "p99")
        gap = _added_ms(runs, provider, "gap_c1", "gap_ms", "p99")
        checks.append(_check(f"{provider} stream: added TTFT p50 (ms)", p50, 0.25, False))
        checks.append(_check(f"{provider} stream: added TTFT p99 (ms)", p99, 1.0, False))
        checks.append(_check(f"{provider} stream: added gap p99 (ms)", gap, 1.0, False))
        hold = phase(find_run(runs, provider, "stream", "aichat"), "hold")
        if hold is not None:
            per_stream = hold["rss_kb_per_stream"].get("gateway")
            mb = None if per_stream is None else round(per_stream * 1000 / 1024, 1)
            checks.append(_check(f"{provider}: RSS of 1,000 idle streams (MB)", mb, 50, False))
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
