"""kxds's own time per change, in process: the M8 changes without Envoy or streams.

Run alone: ``.venv/bin/python -m bench.per_change [--repeats 30] [--profile] [--tls]
[--nodes 500]``.

The live controller (no worker thread, so the time is this thread's own),
its snapshot cache, and the changes of M8 (``bench/m8_scenarios.py``): an
EndpointSlice at 1,000 Services (M1), an Exact path added to one Ingress at
N = 100 / 1,000 / 3,000 routes (M2), and, with 500 node groups watching, a
Service's nodePort moved and a Local Service's pod moved (M9). Each sample is
:meth:`~kxds.controller.Controller.rebuild` of the changed state, every view
set on the cache. Printed: the median and p25 of the wall time and of the
thread's CPU time (on a shared machine the CPU time is the steadier of the
two); ``--profile``: a cProfile of the samples, by cumulative time; ``--tls``: the M2
rows again with every Ingress terminating TLS for its host (one wildcard certificate
per namespace), as most Ingresses of a real cluster do; ``--nodes N``: the M9 rows
with N node groups instead of 500 (how a change's cost grows with the fleet).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

import yaml

from bench import fleet as F
from bench import scenario
from bench.m2 import with_path
from bench.m9 import CONFIG as FLEET_CONFIG
from bench.scenario import Spec
from kxds.certs.make import make_ca, make_leaf, tls_secret_yaml
from kxds.controller import Controller
from kxds.kube.models import ClusterState, EndpointSlice
from kxds.translators.config import TranslateConfig
from kxds.xds.cache import SnapshotCache
from kxds.xds.identity import NodeIdentity


async def _samples(label: str, state: ClusterState, config: TranslateConfig,
                   change: Callable[[ClusterState, int], ClusterState], repeats: int,
                   profile: bool, nodes: int = 0) -> dict[str, Any]:
    cache = SnapshotCache()
    cp = Controller(cache, config, in_thread=False)
    await cp.rebuild(state)
    for n in range(nodes):
        name = F.node_name(n)
        cache.watch(NodeIdentity(node_id=name, role="node", group=f"node/{name}",
                                 node_name=name, zone=None, cluster="node"))
    await cp.rebuild(state)
    wall, cpu = [], []
    prof = cProfile.Profile() if profile else None
    for r in range(repeats + 1):  # the first change warms up
        state = change(state, r)
        t0, c0 = time.perf_counter(), time.thread_time()
        if prof is not None and r:
            prof.enable()
        await cp.rebuild(state)
        if prof is not None and r:
            prof.disable()
        if r:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
    out = {"change": label, "wall_p50_ms": statistics.median(wall) * 1e3,
           "wall_p25_ms": statistics.quantiles(wall, n=4)[0] * 1e3,
           "cpu_p50_ms": statistics.median(cpu) * 1e3,
           "cpu_p25_ms": statistics.quantiles(cpu, n=4)[0] * 1e3, "samples": len(wall)}
    print(f"{label}: wall p50 {out['wall_p50_ms']:.2f} ms (p25 {out['wall_p25_ms']:.2f}), "
          f"CPU p50 {out['cpu_p50_ms']:.2f} ms (p25 {out['cpu_p25_ms']:.2f})", flush=True)
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
    return out


def _with_tls(doc: dict[str, Any]) -> dict[str, Any]:
    """An Ingress document terminating TLS for its hosts with its namespace's Secret."""
    doc["spec"]["tls"] = [{"hosts": [r["host"] for r in doc["spec"]["rules"]],
                           "secretName": "tls"}]
    return doc


def _tls_state(spec: Spec) -> ClusterState:
    pair = make_leaf(make_ca(), ["*.example.com"])
    docs = [_with_tls(d) if d["kind"] == "Ingress" else d for d in scenario.documents(spec)]
    namespaces = sorted({d["metadata"]["namespace"] for d in docs if d["kind"] == "Ingress"})
    docs += [yaml.safe_load(tls_secret_yaml(ns, "tls", pair)) for ns in namespaces]
    return ClusterState.from_objects(scenario.parse(d) for d in docs)


async def _tls_rows(repeats: int, profile: bool) -> list[dict[str, Any]]:
    out = []
    for n in (100, 1000, 3000):
        routes = Spec(services=n, endpoints=1, address=lambda i, e: ("127.0.0.1", 9))

        def path_added(state: ClusterState, r: int, routes: Spec = routes) -> ClusterState:
            j = (r * 7) % routes.ingresses
            doc = scenario.ingress_doc(routes, j, ((f"/m8-{r}", j * routes.paths_per_ingress),))
            return scenario.with_objects(state, scenario.parse(_with_tls(doc)))
        out.append(await _samples(f"M2 a new path, {n:,} routes, TLS on every Ingress",
                                  _tls_state(routes),
                                  TranslateConfig(http_port=18080, listen_address="127.0.0.1"),
                                  path_added, repeats, profile))
    return out


async def run(repeats: int, profile: bool, nodes: int = 500) -> list[dict[str, Any]]:
    out = []
    spec = Spec(services=1000)

    def slice_moved(state: ClusterState, r: int) -> ClusterState:
        new = scenario.parse(scenario.slice_doc(spec, (r * 37) % spec.services,
                                                generation=r + 1))
        assert isinstance(new, EndpointSlice)
        return scenario.with_slice(state, new)
    out.append(await _samples("M1 an EndpointSlice, 1,000 Services",
                              scenario.build_state(spec), TranslateConfig(), slice_moved,
                              repeats, profile))
    for n in (100, 1000, 3000):
        routes = Spec(services=n, endpoints=1, address=lambda i, e: ("127.0.0.1", 9))

        def path_added(state: ClusterState, r: int, routes: Spec = routes) -> ClusterState:
            j = (r * 7) % routes.ingresses
            return with_path(routes, state, j, ((f"/m8-{r}", j * routes.paths_per_ingress),))
        out.append(await _samples(f"M2 a new path, {n:,} routes", scenario.build_state(routes),
                                  TranslateConfig(http_port=18080, listen_address="127.0.0.1"),
                                  path_added, repeats, profile))
    fleet = F.Fleet(services=1000, nodes=nodes)
    locals_ = list(range(0, fleet.services, fleet.local_every))
    out.append(await _samples(
        f"M9 a nodePort moved, {nodes:,} nodes", F.build_state(fleet), FLEET_CONFIG,
        lambda state, r: F.with_service(state, fleet, 10 * r + 1, F.FREE_PORT_BASE + r),
        repeats, profile, nodes=fleet.nodes))
    out.append(await _samples(
        f"M9 a Local pod moved, {nodes:,} nodes", F.build_state(fleet), FLEET_CONFIG,
        lambda state, r: F.with_slice(state, fleet, locals_[r % len(locals_)], r + 3),
        repeats, profile, nodes=fleet.nodes))
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.per_change", description=__doc__)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--nodes", type=int, default=500, help="node groups of the M9 rows")
    args = p.parse_args()
    asyncio.run(_tls_rows(args.repeats, args.profile) if args.tls
                else run(args.repeats, args.profile, args.nodes))


if __name__ == "__main__":
    main()
