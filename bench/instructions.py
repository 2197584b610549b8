"""Instructions per request: what a gateway executes for one answer, counted, not timed.

``python -m bench.instructions PROVIDER MODE [--gateway-pythonpath DIR] [--floor]``

On a shared 2-core virtual machine the CPU time of the same code moves by 5-10% from run
to run, more than most single optimisations save. The number of instructions the gateway
executes per request does not: it is counted by valgrind's callgrind (Debian's
``valgrind``), repeats to about 0.05% however busy the machine is, and depends on the code,
the interpreter and the libraries' builds rather than on the CPU's speed. It is not time
(cache misses and system calls are not in it), so it ranks changes to aichat's own Python
code; the full run (``bench.run``) stays the measure of time.

The gateway runs under callgrind, about fifty times slower, pinned as in the full run,
with the fake upstream and load generator of ``bench.run``. It is measured twice, after
``FEW`` and after ``MANY`` requests at concurrency 16; the difference over ``MANY - FEW``
requests leaves out start-up and shutdown. ``--gateway-pythonpath`` runs aichat from
another source tree (a copy with a change applied); ``--floor`` counts ``bench.floor``
instead. A pair of runs takes one to three minutes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.answer import Shape
from bench.gateways import AichatOptions, Gateway, start_aichat, start_bare_proxy
from bench.procs import run_loadgen, start_upstream
from bench.suite import CHUNKS, PROVIDERS, request_target

FEW, MANY = 100, 600
CONCURRENCY = 16


def _launcher(out: Path) -> tuple[str, ...]:
    return ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--cache-sim=no")


def _total(out: Path) -> int:
    """The instruction total of a callgrind output file."""
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {out}")


def count(provider: str, mode: str, requests: int, pythonpath: str | None, floor: bool) -> int:
    """Instructions the gateway executed from its start to its end, ``requests`` answered."""
    work = Path(tempfile.mkdtemp(prefix="aichat-instructions-"))
    try:
        out = work / "callgrind.out"
        upstream = start_upstream(work)
        try:
            gateway: Gateway | None
            if floor:
                gateway = start_bare_proxy("floor", upstream.url, work, _launcher(out))
            else:
                options = AichatOptions(provider, pythonpath=pythonpath, launcher=_launcher(out))
                gateway = start_aichat(upstream.url, work, options)
            if gateway is None:
                raise RuntimeError(f"this aichat has no {provider} provider")
            try:
                target, body_for = request_target(
                    provider, mode == "stream", gateway.proc.url, False
                )
                phase = {
                    "name": "counted",
                    "concurrency": CONCURRENCY,
                    "requests": requests,
                    "max_seconds": 900,
                    "body": body_for(Shape(CHUNKS)),
                }
                spec = {**target, "chunks": CHUNKS, "watch": {}, "phases": [phase]}
                done = run_loadgen(spec, timeout=1200)[0]
                if done["requests_ok"] != requests:
                    raise RuntimeError(f"{done['requests_ok']} of {requests} answered: {done}")
            finally:
                gateway.proc.stop(grace=120)  # callgrind writes its file on the way out
        finally:
            upstream.stop()
        return _total(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    """Print the instructions per request of one scenario."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("provider", choices=PROVIDERS)
    parser.add_argument("mode", choices=("stream", "whole"))
    parser.add_argument("--gateway-pythonpath", help="run aichat from this source tree instead")
    parser.add_argument("--floor", action="store_true", help="count bench.floor instead")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    few, many = (
        count(args.provider, args.mode, n, args.gateway_pythonpath, args.floor) for n in (FEW, MANY)
    )
    who = "floor" if args.floor else (args.gateway_pythonpath or "aichat")
    per_request = (many - few) / (MANY - FEW)
    print(
        f"{args.provider} {args.mode} via {who}: {per_request / 1000:,.0f}k instructions a request"
    )


if __name__ == "__main__":
    main()
