"""Three replicas behind compose's nginx, sharing one Redis and one upstream, act as one gateway.

Real processes on loopback: three ``aichat serve`` on ports of their own, Debian's nginx
running the configuration of docker-compose.yml's ``lb`` (tests/deploy/balancer.py renders
it for loopback), the run's Redis (``redis_url``: the suite's own, or ``REDIS_URL``) and a fake aichats upstream
whose answers take half a second, so that streams are open whenever something happens.

Under steady load: a rolling restart loses no request, a SIGKILL fails only the streams that
were open on the killed replica (each with a broken body at the client, never ``[DONE]``), a
key's rate and concurrency limits hold exactly across the replicas, and the replicas'
``/metrics`` add up to what was sent.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from tests.conftest import inside_one_rate_window
from tests.deploy.balancer import (
    NGINX,
    Load,
    Nginx,
    Replica,
    ask,
    failures,
    nginx,
)
from tests.deploy.procs import free_port, server_env
from tests.fakes import FakeAichats, aichats_body

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        NGINX is None, reason="nginx is not installed (.ci/run installs Debian's nginx)"
    ),
]

PIECES = [f"p{i} " for i in range(10)]  # equal lengths: one write each, 50 ms apart
EXPECTED = "".join(PIECES)
RATED_KEY = "sk-rated-0123456789abcdef"
NARROW_KEY = "sk-narrow-0123456789abcdef"
RPM = 12
CONCURRENT = 3
CONFIG = """
[[models]]
name = "gpt-4o"
provider = "aichats"
base_url = "{upstream}"

[[keys]]
name = "rated"
key_env = "RATED_KEY"
requests_per_minute = {rpm}

[[keys]]
name = "narrow"
key_env = "NARROW_KEY"
max_concurrent = {concurrent}
"""


@dataclass
class Cluster:
    """The replicas, the balancer in front of them and the upstream behind them."""

    replicas: list[Replica]
    lb: Nginx
    upstream: FakeAichats
    http: aiohttp.ClientSession

    async def heal(self) -> None:
        """Start any replica a failed test left stopped; wait until all are ready."""
        for replica in self.replicas:
            if not replica.running:
                await replica.start()
        await asyncio.gather(*(replica.wait_ready(self.http) for replica in self.replicas))

    def load(self, name: str) -> Load:
        """Steady traffic through the balancer, not started yet."""
        return Load(self.http, self.lb.url, EXPECTED, name)

    async def streaming(self, replica: Replica, within: float = 5.0) -> None:
        """Wait until ``replica`` has a stream open (its ``aichat_open_streams``)."""
        deadline = time.monotonic() + within
        while (await replica.metrics(self.http))[("aichat_open_streams", ())] < 1:
            assert time.monotonic() < deadline, f"no stream open on {replica.address}"
            await asyncio.sleep(0.02)

    async def routed_to(self, replica: Replica, after: set[str], within: float = 15.0) -> None:
        """Wait until nginx sends a request to ``replica`` that is not in ``after``."""
        deadline = time.monotonic() + within
        while True:
            routes = self.lb.routes()
            if any(r.replica == replica.address for i, r in routes.items() if i not in after):
                return
            assert time.monotonic() < deadline, f"nginx sent nothing to {replica.address}"
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> AsyncIterator[Cluster]:
    workdir = tmp_path_factory.mktemp("replicas")
    upstream = FakeAichats(
        pieces=PIECES, chunk_size=len(aichats_body(PIECES[:1])), delay_between=0.05
    )
    server = TestServer(upstream.app(), host="127.0.0.1")
    await server.start_server()
    config = workdir / "aichat.toml"
    base_url = str(server.make_url("")).rstrip("/")
    config.write_text(CONFIG.format(upstream=base_url, rpm=RPM, concurrent=CONCURRENT))
    shared = {
        "REDIS_URL": redis_url,
        "AICHAT_REDIS_PREFIX": f"aichat-test:{uuid.uuid4().hex}:",
        "RATED_KEY": RATED_KEY,
        "NARROW_KEY": NARROW_KEY,
        "AICHAT_DRAIN_TIMEOUT": "10",
    }
    replicas = []
    for n in range(3):
        port = free_port()
        env = server_env(port, AICHAT_CONFIG=str(config), **shared)
        replicas.append(Replica(port, env, workdir / f"replica-{n}"))
    async with aiohttp.ClientSession() as http:
        try:
            await asyncio.gather(*(replica.start() for replica in replicas))
            async with nginx(workdir / "nginx", [r.port for r in replicas]) as lb:
                group = Cluster(replicas, lb, upstream, http)
                await group.heal()
                yield group
        finally:
            await asyncio.gather(*(replica.close() for replica in replicas))
            await server.close()


async def test_a_keys_limits_hold_exactly_across_the_replicas(cluster: Cluster) -> None:
    await cluster.heal()
    await inside_one_rate_window(10)
    asks = [
        ask(cluster.http, cluster.lb.url, f"rate-{n}", False, EXPECTED, RATED_KEY)
        for n in range(RPM + 6)
    ]
    rated = await asyncio.gather(*asks)
    assert Counter(o.status for o in rated) == {200: RPM, 429: 6}, failures(rated)

    asks = [
        ask(cluster.http, cluster.lb.url, f"narrow-{n}", True, EXPECTED, NARROW_KEY)
        for n in range(CONCURRENT + 2)
    ]
    narrow = await asyncio.gather(*asks)
    assert Counter(o.status for o in narrow) == {200: CONCURRENT, 429: 2}, failures(narrow)
    # Slots are given back wherever they were taken: the key may use all of them again.
    asks = [
        ask(cluster.http, cluster.lb.url, f"narrow-again-{n}", True, EXPECTED, NARROW_KEY)
        for n in range(CONCURRENT)
    ]
    assert failures(await asyncio.gather(*asks)) == []

    routes = cluster.lb.routes()
    for outcomes in (rated, narrow):
        answered_by = {routes[o.load_id].replica for o in outcomes}
        assert answered_by == {r.address for r in cluster.replicas}, "not spread over all"


async def test_the_replicas_metrics_add_up_to_the_load_sent(cluster: Cluster) -> None:
    await cluster.heal()
    before = [await r.metrics(cluster.http) for r in cluster.replicas]
    upstream_before = len(cluster.upstream.requests)
    asks = [
        ask(cluster.http, cluster.lb.url, f"count-{n}", n % 2 == 0, EXPECTED) for n in range(24)
    ]
    asks += [
        ask(cluster.http, cluster.lb.url, f"count-bad-{n}", False, EXPECTED, "sk-wrong")
        for n in range(3)
    ]
    outcomes = await asyncio.gather(*asks)
    assert Counter(o.status for o in outcomes) == {200: 24, 401: 3}
    after = [await r.metrics(cluster.http) for r in cluster.replicas]

    def answered(samples: dict[tuple[str, tuple[str, ...]], float], status: str) -> float:
        return sum(
            value
            for (name, labels), value in samples.items()
            if name == "aichat_requests_total" and ("status", status) in labels
        )

    per_replica = [
        answered(a, "200") - answered(b, "200") for a, b in zip(after, before, strict=True)
    ]
    assert sum(per_replica) == 24, per_replica
    assert all(count > 0 for count in per_replica), per_replica
    assert (
        sum(answered(a, "401") - answered(b, "401") for a, b in zip(after, before, strict=True))
        == 3
    )
    assert len(cluster.upstream.requests) - upstream_before == 24
    assert all(a[("aichat_open_streams", ())] == 0 for a in after)


async def test_a_rolling_restart_under_load_loses_nothing(cluster: Cluster) -> None:
    await cluster.heal()
    load = cluster.load("rolling")
    load.start()
    await asyncio.sleep(1)
    drained = Counter[str]()
    for replica in cluster.replicas:
        await cluster.streaming(replica)
        in_flight = set(load.in_flight)
        assert await replica.stop(signal.SIGTERM) == 0, replica.output()
        routes = cluster.lb.routes()
        drained[replica.address] = sum(
            routes[i].replica == replica.address for i in in_flight if i in routes
        )
        await replica.start()
        await replica.wait_ready(cluster.http)
        await cluster.routed_to(replica, after=set(routes))
    outcomes = await load.stop()

    assert failures(outcomes) == [], cluster.lb.errors()[-3000:]
    assert all(o.done for o in outcomes if o.stream)
    # nginx did meet each stopped replica, refusing (502) or draining (503), and went on.
    routes = {i: r for i, r in cluster.lb.routes().items() if i.startswith("rolling-")}
    for replica in cluster.replicas:
        retried = [r for r in routes.values() if r.tried[0] == replica.address and r.tried[1:]]
        assert retried, replica.address
        assert all(r.statuses[0] in {"502", "503"} and r.status == 200 for r in retried)
    # Each replica had requests in flight when it was told to stop, and finished them.
    assert all(drained[r.address] > 0 for r in cluster.replicas), drained
    assert len(outcomes) > 30, len(outcomes)


async def test_a_killed_replica_fails_only_the_streams_open_on_it(cluster: Cluster) -> None:
    await cluster.heal()
    victim = cluster.replicas[1]
    load = cluster.load("kill")
    load.start()
    await asyncio.sleep(1)
    await cluster.streaming(victim)
    killed_at = time.monotonic()
    assert await victim.stop(signal.SIGKILL) == -signal.SIGKILL
    await asyncio.sleep(2)
    outcomes = await load.stop()
    routes = cluster.lb.routes()

    failed = [o for o in outcomes if o.failure]
    assert failed, "the streams open on the killed replica should have failed"
    for o in failed:
        assert o.stream and routes[o.load_id].replica == victim.address, o
        assert o.started < killed_at and o.status == 200, o  # open: its answer had begun
        # A body that stops short of its end, which every HTTP client reports as an error.
        assert isinstance(o.error, aiohttp.ClientPayloadError), o
        assert not o.done
    later = [o for o in outcomes if o.started > killed_at]
    assert later and not failures(later)
    assert all(routes[o.load_id].replica != victim.address for o in later)
