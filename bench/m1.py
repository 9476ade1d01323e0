"""M1: one EndpointSlice change -> the real Envoy ACKs the new endpoints.

1,000 Services are loaded; then, one at a time, an EndpointSlice is replaced
(one pod swapped for a new one). Each sample is the time from publishing the
new ClusterState to the control plane until the cache's tracker records
Envoy's ACK of the new version of exactly that endpoint resource. Envoy's own
counters prove the push was minimal: no CDS or LDS update, no cluster added or
modified, no warming cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from bench import scenario
from bench.live import ControlPlane, poll
from bench.procs import Envoy, log_tail
from bench.report import Metric
from bench.scenario import Spec
from bench.timing import Summary
from kxds import names
from kxds.envoy.resource import ENDPOINT, Resource
from kxds.kube.models import ClusterState, EndpointSlice

HOLDOFF = 0.05
"""``kxds serve``'s default (``--holdoff-ms 50``, ``--max-holdoff-ms 250``): what users get.
A change after a calm at least this long is rebuilt at once (leading edge)."""
MAX_HOLDOFF = 0.25
"""Debounce used here (the default 50 ms alone would exceed the target)."""
TARGET = "p50 <= 20 ms, p99 <= 100 ms; no CDS/LDS update, no warming"
WATCHED = ("cluster_manager.cds.update_success", "cluster_manager.cds.update_rejected",
           "listener_manager.lds.update_success", "cluster_manager.cluster_added",
           "cluster_manager.cluster_modified", "cluster_manager.cluster_removed",
           "cluster_manager.warming_clusters", "cluster_manager.active_clusters")


async def wait_loaded(envoy: Envoy, clusters: int, timeout: float = 120.0) -> None:
    """Until Envoy has every cluster warm and its listeners active: the baseline
    counters are taken after the initial CDS and LDS, never between them."""
    async def loaded() -> bool:
        s = await envoy.stats("cluster_manager\\.(active|warming)_clusters|"
                              "listener_manager\\.(lds\\.update_success|total_listeners_)")
        return (s.get("cluster_manager.active_clusters", 0) >= clusters
                and s.get("cluster_manager.warming_clusters", 0) == 0
                and s.get("listener_manager.lds.update_success", 0) >= 1
                and s.get("listener_manager.total_listeners_active", 0) >= 1
                and s.get("listener_manager.total_listeners_warming", 0) == 0)
    await envoy.wait_until(loaded, timeout, interval=0.05)


@contextlib.asynccontextmanager
async def one_envoy(name: str, port: int, **options: Any) -> AsyncIterator[Envoy]:
    """A real Envoy for one run: the tail of its log printed if the run fails; stopped."""
    envoy = Envoy(name, port, **options)
    try:
        yield envoy
    except Exception:
        print(log_tail(envoy.name))
        raise
    finally:
        envoy.stop()


async def acked_change(cp: ControlPlane, node: str, name: str, old: Resource | None
                       ) -> tuple[float, float]:
    """Once ``name``'s endpoints were changed (they were ``old``): the instants the view
    held another resource and ``node`` ACKed it (``time.perf_counter()``)."""
    tv = await poll(cp.replaced(ENDPOINT, name, old), 10.0, what=f"view of {name}")
    res = cp.resource(ENDPOINT, name)
    assert res is not None, name
    t1 = await poll(cp.acked(node, ENDPOINT, name, res.version), 10.0, what=f"ACK of {name}")
    return tv, t1


async def run_protocol(n: int, repeats: int, warmup: int, delta: bool,
                       holdoff: float) -> dict[str, Any]:
    spec = Spec(services=n)
    state = scenario.build_state(spec)
    cp = ControlPlane(holdoff=holdoff, max_holdoff=max(holdoff * 5, MAX_HOLDOFF))
    protocol = "delta" if delta else "sotw"
    node = f"m1-{protocol}"
    try:
        await cp.start(state)
        async with one_envoy(node, cp.port, delta=delta, node_id=node) as envoy:
            return {"protocol": protocol, **await _changes(cp, envoy, node, spec, state,
                                                           repeats, warmup, holdoff)}
    finally:
        await cp.stop()


async def _changes(cp: ControlPlane, envoy: Envoy, node: str, spec: Spec,
                   state: ClusterState, repeats: int, warmup: int,
                   holdoff: float) -> dict[str, Any]:
    n = spec.services
    await wait_loaded(envoy, n)
    before = await envoy.stats("cluster_manager|listener_manager")
    samples: list[float] = []
    build: list[float] = []
    warming_seen = 0
    for r in range(warmup + repeats):
        i = (r * 37) % n
        new = scenario.parse(scenario.slice_doc(spec, i, generation=r + 1))
        assert isinstance(new, EndpointSlice)
        state = scenario.with_slice(state, new)
        name = names.service_cluster(new.meta.namespace, new.service_name,
                                     scenario.SERVICE_PORT)
        old = cp.resource(ENDPOINT, name)
        t0 = time.perf_counter()
        cp.publish(state)
        tv, t1 = await acked_change(cp, node, name, old)
        if r >= warmup:
            samples.append(t1 - t0)
            build.append(tv - t0)
        s = await envoy.stats("cluster_manager\\.warming_clusters")
        warming_seen = max(warming_seen, s.get("cluster_manager.warming_clusters", 0))
        # A calm between changes: this metric is one change after a quiet time
        # (a burst is coalesced by the holdoff instead, and measured by M7).
        await asyncio.sleep(holdoff + 0.01)
    after = await envoy.stats("cluster_manager|listener_manager")
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in WATCHED
             if after.get(k, 0) != before.get(k, 0)}
    return {"latency": Summary.of(samples), "rebuild": Summary.of(build),
            "envoy_counters_moved": moved,
            "max_warming_clusters": warming_seen,
            "minimal": not moved and warming_seen == 0}


async def run_m1(n: int, repeats: int, warmup: int, unit: float,
                 holdoff: float = HOLDOFF, through_api: bool = True) -> list[Metric]:
    results = [await run_protocol(n, repeats, warmup, delta, holdoff) for delta in (False, True)]
    extra: dict[str, Any] = {}
    if through_api:  # details only: the same change as a watch event (bench.m1_api)
        from bench.m1_api import run as run_through_api
        extra["through_api_source"] = await run_through_api(n, repeats=min(repeats, 40))
    worst_p50 = max(r["latency"].median for r in results)
    worst_p99 = max(r["latency"].p99 for r in results)
    minimal = all(r["minimal"] for r in results)
    details: dict[str, Any] = {"services": n, "holdoff_s": holdoff,
                               "max_holdoff_s": max(holdoff * 5, MAX_HOLDOFF), **extra}
    for r in results:
        lat, reb = r["latency"], r["rebuild"]
        details[r["protocol"]] = {
            "p50_s": lat.median, "p99_s": lat.p99, "samples": lat.n,
            "p50_cal": lat.median / unit,
            "publish_to_view_p50_s": reb.median,
            "publish_to_view_share_of_p50": reb.median / lat.median if lat.median else None,
            "envoy_counters_moved": r["envoy_counters_moved"],
            "max_warming_clusters": r["max_warming_clusters"],
        }
    met = worst_p50 <= 0.020 and worst_p99 <= 0.100 and minimal
    return [Metric(id="M1", title=f"EndpointSlice change -> Envoy ACK ({n} services)",
                   value=worst_p50, unit="s", target=TARGET, met=met, cal=worst_p50 / unit,
                   details={**details, "p99_s": worst_p99, "minimal_push": minimal})]
