"""CPU time and memory of a process tree, read from Linux's ``/proc`` (no dependencies)."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    text = (_PROC / str(pid) / "stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (a peer proxy may run worker processes)."""
    parents: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by ``pid`` and its descendants."""
    total = 0
    for member in descendants(pid):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        # Fields 14 and 15 of stat (utime, stime), counted from field 3 here.
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants now."""
    return sum(_status_kib(p, "VmRSS") for p in descendants(pid)) * 1024


def peak_rss_bytes(pid: int) -> int:
    """Peak resident memory (``VmHWM``) of ``pid`` and its descendants."""
    return sum(_status_kib(p, "VmHWM") for p in descendants(pid)) * 1024


def reset_peak_rss(pid: int) -> bool:
    """Restart ``VmHWM`` from the current RSS (Linux 4.0+, needs the right to write)."""
    ok = True
    for member in descendants(pid):
        try:
            (_PROC / str(member) / "clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def core_busy_seconds() -> dict[str, float]:
    """CPU seconds each core spent busy (anyone's work) since boot, from ``/proc/stat``.

    Compared with the watched processes' own CPU, this shows work by other processes on the
    machine during a phase: a benchmark on a shared machine must say how quiet it was.
    """
    busy = {}
    for line in (_PROC / "stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        # user nice system idle iowait irq softirq steal ...: all but idle and iowait.
        ticks = [int(value) for value in fields[:8]]
        busy[name] = (sum(ticks) - ticks[3] - ticks[4]) / _TICKS
    return busy
