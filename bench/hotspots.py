"""Summarise a py-spy ``--format raw`` profile: where the gateway's CPU time goes.

``python -m bench.hotspots PROFILE.txt [--top 25] [--match aichat/]`` prints the functions
with the most samples on-CPU, both *self* (the function itself was running) and *total*
(the function was on the stack), as percentages of all samples. Idle samples (the event
loop waiting in ``select``/``epoll``) are reported apart, not counted as work.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME_FILE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_IDLE = ("select (selectors.py", "_run_once (uvloop", "run (uvloop", "poll (selectors.py")


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    found = _FRAME_FILE.match(frame)
    if not found:
        return frame
    path = found["file"]
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{found['func']} ({path})"


def load(path: Path) -> tuple[list[tuple[list[str], int]], int]:
    """Stacks (root first) with their sample counts, and the count of idle samples."""
    stacks, idle = [], 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any(frames[-1].startswith(mark) for mark in _IDLE) or "epoll" in frames[-1]:
            idle += int(count)
            continue
        stacks.append(([_short(f) for f in frames], int(count)))
    return stacks, idle


def summarise(stacks: list[tuple[list[str], int]]) -> tuple[Counter[str], Counter[str], int]:
    """Self and total samples per function, and the number of busy samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    busy = 0
    for frames, count in stacks:
        busy += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return own, total, busy


def main() -> None:
    """Print the top functions by self and by total time."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only functions whose location has this")
    args = parser.parse_args()
    stacks, idle = load(args.profile)
    own, total, busy = summarise(stacks)
    print(f"{busy} busy samples, {idle} idle ({idle / max(1, busy + idle):.0%} of all)")
    for title, counts in (("self", own), ("total", total)):
        print(f"\n-- {title} (% of busy samples)")
        shown = [(f, n) for f, n in counts.most_common() if args.match in f][: args.top]
        for frame, count in shown:
            print(f"{count / max(1, busy):6.1%}  {frame}")


if __name__ == "__main__":
    main()
