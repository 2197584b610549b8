"""Instructions per request: what a gateway executes for one answer, counted, not timed.

``python -m bench.instructions PROVIDER MODE [--gateway-pythonpath DIR] [--floor | --traced]``

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
instead; ``--traced`` traces every request (``aichat-traced``), the export thread's work
included. A pair of runs takes one to three minutes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.answer import Shape
from bench.gateways import AichatOptions, Gateway, start_aichat, start_bare_proxy
from bench.procs import run_loadgen, start_upstream
from bench.suite import CHUNKS, PROVIDERS, request_target

FEW, MANY = 100, 600
CONCURRENCY = 16
SPANS_A_REQUEST = 2  # a server span and one upstream attempt's
SPANS_WAIT_S = 20.0


def _launcher(out: Path) -> tuple[str, ...]:
    return ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--cache-sim=no")


def _total(out: Path) -> int:
    """The instruction total of a callgrind output file."""
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {out}")


def _spans_done(url: str) -> float:
    """The spans a traced gateway has exported or dropped, from its ``/metrics``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=60) as response:  # noqa: S310
        lines = response.read().decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(
            ("aichat_trace_spans_exported_total", "aichat_trace_spans_dropped_total")
        )
    )


def _await_spans(url: str, requests: int) -> None:
    """Wait until every span of ``requests`` has left the gateway's export queue.

    Spans leave in batches, every 5 s or 512 at a time; under callgrind the last ones are
    still being encoded when the load ends, and stopping the gateway then would cut them
    off (it waits 5 s at most). ``/metrics`` is read after a fixed pause, once in most runs:
    each read costs the FEW and the MANY run alike.
    """
    for reads in range(1, 31):
        time.sleep(SPANS_WAIT_S)
        if _spans_done(url) >= SPANS_A_REQUEST * requests:
            print(f"{requests} requests: their spans left after {reads} read(s) of /metrics")
            return
    raise RuntimeError(f"the spans of {requests} requests were not exported in time")


def count(
    provider: str,
    mode: str,
    requests: int,
    pythonpath: str | None,
    floor: bool,
    traced: bool = False,
) -> int:
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
                options = AichatOptions(
                    provider, pythonpath=pythonpath, traced=traced, launcher=_launcher(out)
                )
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
                if traced:
                    _await_spans(gateway.proc.url, requests)
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
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--floor", action="store_true", help="count bench.floor instead")
    which.add_argument("--traced", action="store_true", help="trace every request")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    few, many = (
        count(args.provider, args.mode, n, args.gateway_pythonpath, args.floor, args.traced)
        for n in (FEW, MANY)
    )
    who = "floor" if args.floor else (args.gateway_pythonpath or "aichat")
    who += ", traced" if args.traced else ""
    per_request = (many - few) / (MANY - FEW)
    print(
        f"{args.provider} {args.mode} via {who}: {per_request / 1000:,.0f}k instructions a request"
    )


if __name__ == "__main__":
    main()
