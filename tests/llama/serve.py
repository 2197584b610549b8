"""llama.cpp's HTTP server (the ``xllamacpp`` wheel) in a process of its own, for tests/llama.

``python -m tests.llama.serve '<settings as JSON>'`` loads the model, prints the address it
listens on and serves until its standard input closes: the fixture that started it closes
it, and so does the fixture's process dying, so no server outlives the test run.

The settings are :class:`Settings` as JSON. Two threads read prompts (one batch is a few
large products, worth splitting over both cores), one thread writes: generating a token is
small work, and two threads waiting on each other for every token run many times slower the
moment anything else wants a core (measured on the shared test machine).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Settings:
    """What the fixture chooses; everything else is llama.cpp's default."""

    model: str  # the GGUF file
    port: int
    slot_context: int  # tokens each slot holds; llama.cpp's n_ctx is this times ``slots``
    slots: int
    max_tokens: int  # the answer length of a request that sets none (not a cap)
    alias: str | None = None

    def json(self) -> str:
        """The command-line form."""
        return json.dumps(asdict(self))


def start(settings: Settings) -> Any:
    """llama.cpp's server (``xllamacpp.Server``), listening once this returns."""
    import xllamacpp  # here: the fixture imports Settings from a venv that may lack it

    common = xllamacpp.CommonParams()
    common.model.path = settings.model
    common.port = settings.port
    common.hostnames = ["127.0.0.1"]
    common.n_ctx = settings.slot_context * settings.slots
    common.n_parallel = settings.slots
    common.n_predict = settings.max_tokens
    common.use_jinja = True
    common.endpoint_slots = True
    common.endpoint_props = True
    common.endpoint_metrics = True
    common.cpuparams.n_threads = 1
    common.cpuparams_batch.n_threads = min(2, os.cpu_count() or 1)
    # The same answer to the same prompt: tests never depend on a lucky draw. A model this
    # small repeats itself until its answer is cut off; penalties for repeating let it end.
    common.sampling.temp = 0.0
    common.sampling.seed = 1
    common.sampling.penalty_repeat = 1.3
    common.sampling.dry_multiplier = 0.8
    if settings.alias:
        common.model_alias = {settings.alias}
    return xllamacpp.Server(common)


def main() -> None:
    settings = Settings(**json.loads(sys.argv[1]))
    server = start(settings)
    print(f"listening on {server.listening_address}", flush=True)
    sys.stdin.buffer.read()  # until the fixture closes it, or dies
    os._exit(0)  # no teardown of llama.cpp's threads to wait for


if __name__ == "__main__":
    main()
