"""M9: a node fleet, 500 per-node proxies and 1,000 NodePort/LoadBalancer Services.

The scenario is :mod:`bench.fleet` (one Service in four ``externalTrafficPolicy:
Local``, endpoints spread over the nodes; nodePorts bound on 127.0.0.2, the
``--node-bind-address``). Two real Envoys (role node, one SotW and one delta;
both bind every listener, which Envoy's default ``SO_REUSEPORT`` allows) and
498 light per-node ADS streams
(``bench.adsclient --role node``, delta, every listener and the endpoints of
the measured Local Services) are connected, each its own node.

- Service spec change: a Service's nodePort moves; the sample is the time
  from publishing the state until every one of the 500 nodes has ACKed the
  new listener (the cache's per-node tracker).
- Local EndpointSlice change: a Local Service's pod moves to another node;
  the sample is the time until every node whose view changed has ACKed the
  new local endpoints; the views set on the cache and the light streams that
  got any response in the meantime must be those nodes only.

M9 runs in a fresh process of its own (``python -m bench.m9``), as kxds runs
in production: run inside the benchmark's process after the other metrics,
its RSS carried their garbage (877 MB in a full run against 389 MB alone).
CPU per change is this process's CPU time (kxds's rebuild and xDS serving,
plus the benchmark's own polling) from publish to the last ACK; RSS is this
process's at the end, with all 500 streams connected, measured before the
in-process profile below runs. Where the live Service
changes spend their time is sampled (:mod:`bench.sampler`). A profile of the
in-process rebuild (every node view built and set on a snapshot cache, no
gRPC) goes to ``profile-m9.txt``, and the same is timed with the nodes spread
over three zones (three classes of nodes, :mod:`kxds.fleet`); with the full
run, the same change through
the per-node translation kxds used before (:func:`kxds.views.build_node` per
node) is timed on a few nodes for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import pstats
import resource
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import fleet as F
from bench import procs
from bench.live import ControlPlane, LightClients, poll
from bench.m3 import _without_roots
from bench.procs import Envoy
from bench.report import Metric
from bench.sampler import Sampler
from bench.timing import Summary
from kxds import names
from kxds.envoy.resource import ENDPOINT, LISTENER
from kxds.kube.models import ClusterState
from kxds.translators.config import NodeInfo, TranslateConfig

TARGET = ("Service change -> last node ACK <= 1 s; Local EndpointSlice change -> only the "
          "nodes whose view changes get a push, last ACK <= 300 ms; CPU <= 0.5 core-s per "
          "change; RSS <= 400 MB")
HOLDOFF = 0.005
POLL = 0.01
"""Seconds between looks at the ACKs of 500 nodes (each look costs CPU, counted as kxds's)."""
CONFIG = TranslateConfig(node_bind_address="127.0.0.2")
REAL = 2


class GroupLog:
    """The groups whose view was set, in order (a cache view listener)."""

    def __init__(self) -> None:
        self.sets: list[str] = []

    def __call__(self, group: str, view: Any) -> None:
        self.sets.append(group)


def _version(cp: ControlPlane, node: str, type_url: str, name: str) -> str | None:
    view = cp.cache.view(f"node/{node}")
    found = None if view is None else view.of_type(type_url).get(name)
    return None if found is None else found.version


async def _acked(cp: ControlPlane, want: dict[str, str], type_url: str, name: str,
                 timeout: float) -> float:
    """Until every node of ``want`` has ACKed ``name`` at its version; the time then."""
    left = dict(want)
    deadline = time.monotonic() + timeout
    while True:
        left = {n: v for n, v in left.items() if cp.acked_version(n, type_url, name) != v}
        if not left:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(left)} nodes did not ACK {name}: {sorted(left)[:5]}")
        await asyncio.sleep(POLL)


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _local_cluster(fleet: F.Fleet, i: int) -> str:
    return names.node_cluster(F.scenario.namespace_of(fleet.spec, i),
                              F.scenario.service_name(i), F.scenario.SERVICE_PORT, "TCP",
                              local=True)


async def _service_changes(cp: ControlPlane, fleet: F.Fleet, state: ClusterState,
                           nodes: list[str], repeats: int) -> tuple[ClusterState, dict[str, Any]]:
    lat: list[float] = []
    cpu: list[float] = []
    rebuild: list[float] = []
    for r in range(repeats + 1):
        i = 10 * r + 1
        lname = names.node_listener(F.scenario.namespace_of(fleet.spec, i),
                                    F.scenario.service_name(i), F.scenario.SERVICE_PORT,
                                    "TCP", "nodeport")
        old = {n: _version(cp, n, LISTENER, lname) for n in nodes}
        state = F.with_service(state, fleet, i, F.FREE_PORT_BASE + r)
        seq = cp.rebuild_seq
        spent = cp.counter("kxds_rebuild_duration_seconds_sum")
        c0, t0 = time.process_time(), time.perf_counter()
        cp.publish(state)
        await poll(lambda seq=seq: cp.rebuild_seq > seq,
                   60.0, POLL, what="rebuild")
        want = {n: v for n in nodes if (v := _version(cp, n, LISTENER, lname)) is not None}
        assert len(want) == len(nodes) and all(want[n] != old[n] for n in nodes)
        t_last = await _acked(cp, want, LISTENER, lname, 60.0)
        if r:
            lat.append(t_last - t0)
            cpu.append(time.process_time() - c0)
            rebuild.append(cp.counter("kxds_rebuild_duration_seconds_sum") - spent)
        await asyncio.sleep(0.2)
    s = Summary.of(lat)
    return state, {"last_ack_p50_s": s.median, "last_ack_p99_s": s.p99, "samples": s.n,
                   "rebuild_p50_s": Summary.of(rebuild).median,
                   "cpu_p50_s": Summary.of(cpu).median, "cpu_max_s": max(cpu),
                   "nodes_acked": len(nodes)}


async def _slice_changes(cp: ControlPlane, fleet: F.Fleet, state: ClusterState,
                         nodes: list[str], targets: list[int], clients: LightClients,
                         groups: GroupLog) -> dict[str, Any]:
    lat: list[float] = []
    cpu: list[float] = []
    samples: list[dict[str, Any]] = []
    minimal = True
    light = {f"node-{s}" for s in range(fleet.nodes - REAL)}
    for r, i in enumerate(targets):
        ename = _local_cluster(fleet, i)
        old = {n: _version(cp, n, ENDPOINT, ename) for n in nodes}
        sets0, events0, seq = len(groups.sets), len(clients.events), cp.rebuild_seq
        state = F.with_slice(state, fleet, i, 1)
        c0, t0 = time.process_time(), time.perf_counter()
        cp.publish(state)
        await poll(lambda seq=seq: cp.rebuild_seq > seq,
                   30.0, POLL, what="rebuild")
        changed = {n: v for n in nodes if (v := _version(cp, n, ENDPOINT, ename)) != old[n]}
        assert all(v is not None for v in changed.values())
        t_last = await _acked(cp, changed, ENDPOINT, ename, 30.0)  # type: ignore[arg-type]
        c1 = time.process_time()
        await asyncio.sleep(0.3)  # anything else sent would arrive meanwhile
        pushed = {g.removeprefix("node/") for g in groups.sets[sets0:]
                  if g.startswith("node/")}
        streams = {f"node-{e['s']}" for e in clients.events[events0:]}
        moved = F.nodes_of(fleet, i, 0) | F.nodes_of(fleet, i, 1)
        ok = bool(changed) and pushed == set(changed) and streams == set(changed) & light \
            and set(changed) <= moved
        minimal = minimal and ok
        samples.append({"service": i, "nodes_changed": sorted(changed),
                        "views_set": sorted(pushed), "light_streams_pushed": len(streams),
                        "minimal": ok})
        if r:
            lat.append(t_last - t0)
            cpu.append(c1 - c0)
    s = Summary.of(lat)
    return {"last_ack_p50_s": s.median, "last_ack_p99_s": s.p99, "samples": s.n,
            "cpu_p50_s": Summary.of(cpu).median, "cpu_max_s": max(cpu),
            "only_changed_nodes_pushed": minimal, "changes": samples}


async def _wait_envoy(envoy: Envoy, listeners: int) -> None:
    async def loaded() -> bool:
        s = await envoy.stats("listener_manager\\.total_listeners_(active|warming)")
        return (s.get("listener_manager.total_listeners_active", 0) >= listeners
                and s.get("listener_manager.total_listeners_warming", 0) == 0)
    await envoy.wait_until(loaded, 300.0, interval=0.2)


async def fleet_run(fleet: F.Fleet, repeats: int, sampler: Sampler) -> dict[str, Any]:
    state = F.build_state(fleet)
    cp = ControlPlane(holdoff=HOLDOFF, max_holdoff=0.05, config=CONFIG)
    groups = GroupLog()
    cp.cache.view_listeners.append(groups)
    envoys: list[tuple[Envoy, str]] = []
    clients: LightClients | None = None
    locals_ = [i for i in range(0, fleet.services, fleet.local_every)]
    targets = locals_[:: max(1, len(locals_) // (repeats + 1))][:repeats + 1]
    nodes = [F.node_name(n) for n in range(fleet.nodes)]
    try:
        t0 = time.perf_counter()
        await cp.start(state)
        cold = time.perf_counter() - t0
        for k in range(REAL):
            n = fleet.nodes - REAL + k
            envoys.append((Envoy(f"m9-{n}", cp.port, node_id=F.node_name(n), delta=k == 1,
                                 per_node=True), F.node_name(n)))
        clients = LightClients(cp.port, fleet.nodes - REAL, [_local_cluster(fleet, i)
                                                             for i in targets],
                               protocol="delta", prefix="node", role="node", listeners=True,
                               versions=False)  # only which streams got a push is read
        t0 = time.perf_counter()
        await clients.start(timeout=600.0)
        for envoy, node in envoys:
            view = cp.cache.view(f"node/{node}")
            await _wait_envoy(envoy, len(view.of_type(LISTENER)) if view else 1)
        connected = time.perf_counter() - t0
        await asyncio.sleep(1.0)
        sampler.active = True
        state, spec_change = await _service_changes(cp, fleet, state, nodes, repeats)
        sampler.active = False
        slices = await _slice_changes(cp, fleet, state, nodes, targets, clients, groups)
        stats = [await e.stats("listener_manager\\.lds\\.update_(success|rejected)")
                 for e, _ in envoys]
        return {"services": fleet.services, "nodes": fleet.nodes, "real_envoys": REAL,
                "light_streams": fleet.nodes - REAL, "local_every": fleet.local_every,
                "holdoff_s": HOLDOFF, "first_build_s": cold, "connect_all_s": connected,
                "service_change": spec_change, "local_slice_change": slices,
                "rss_mb": _rss_mb(), "envoy_lds": stats,
                "node_templates": len(cp.controller._fleet._templates),
                "views_assembled": cp.controller._fleet.assembled}
    finally:
        if clients is not None:
            await clients.stop()
        for envoy, _ in envoys:
            envoy.stop()
        await cp.stop()


class _Rebuilds:
    """Every node view built and set on a snapshot cache, in process, as the controller
    does (what survives frozen out of the collector's way)."""

    def __init__(self, infos: list[NodeInfo]) -> None:
        from kxds.envoy.build import SharedBuilds
        from kxds.fleet import FleetMemo
        from kxds.xds.cache import SnapshotCache

        self.infos, self.shared, self.cache = infos, SharedBuilds(), SnapshotCache()
        self.memo = FleetMemo(self.shared)

    def __call__(self, state: ClusterState) -> float:
        t = time.perf_counter()
        for n in self.infos:
            built = self.memo.build(state, CONFIG, f"node/{n.name}", n)
            assert built.resources is not None
            self.cache.set_view(f"node/{n.name}", built.resources)
        self.shared.sweep()
        self.memo.sweep()
        seconds = time.perf_counter() - t
        gc.freeze()
        return seconds


def profile_rebuild(fleet: F.Fleet, results: Path, old_nodes: int) -> dict[str, Any]:
    """A Service change rebuilt for every node in process (views set on a snapshot
    cache, no gRPC), profiled; the same over three zones; and through the former
    per-node path on ``old_nodes``."""
    from kxds.envoy.build import BuildCache, SharedBuilds
    from kxds.views import ViewMemo, build_node

    state, config = F.build_state(fleet), CONFIG
    infos = [NodeInfo(name=F.node_name(n)) for n in range(fleet.nodes)]
    rebuild = _Rebuilds(infos)
    out: dict[str, Any] = {"cold_s": rebuild(state)}
    changed = F.with_service(state, fleet, 1, F.FREE_PORT_BASE + 500)
    moved = F.with_slice(changed, fleet, 0, 1)
    out["service_change_s"] = rebuild(changed)
    out["local_slice_change_s"] = rebuild(moved)
    zoned = _Rebuilds([NodeInfo(name=F.node_name(n), zone=f"zone-{n % 3}")
                       for n in range(fleet.nodes)])
    zoned(state)
    out["three_zones"] = {"service_change_s": zoned(changed),
                          "local_slice_change_s": zoned(moved)}
    prof = cProfile.Profile()
    prof.enable()
    out["service_change_profiled_s"] = rebuild(F.with_service(moved, fleet, 3,
                                                              F.FREE_PORT_BASE + 501))
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
    (results / "profile-m9.txt").write_text(_without_roots(buf.getvalue()), encoding="utf-8")
    stats = pstats.Stats(prof)
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:8]  # type: ignore[attr-defined]
    out["profile_top_self_time"] = [
        f"{v[2]:.3f}s self, {v[3]:.3f}s cum, {v[1]} calls: {Path(k[0]).name}:{k[1]} {k[2]}"
        for k, v in top]
    if old_nodes:
        shared = SharedBuilds()
        memos = [ViewMemo(build=BuildCache(shared)) for _ in range(old_nodes)]
        for n, m in zip(infos, memos, strict=False):
            build_node(state, config, n, m)
        t = time.perf_counter()
        for n, m in zip(infos, memos, strict=False):
            build_node(changed, config, n, m)
        per_node = (time.perf_counter() - t) / old_nodes
        out["former_per_node_path"] = {"nodes_timed": old_nodes, "per_node_s": per_node,
                                       "service_change_500_nodes_s_extrapolated":
                                       per_node * fleet.nodes}
    return out


async def run_m9(unit: float, *, quick: bool, results: Path) -> list[Metric]:
    """M9 measured by a fresh process of its own (see the module docs)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.m9", "--unit", repr(unit), "--results", str(results),
        *(["--quick"] if quick else []), stdout=asyncio.subprocess.PIPE)
    try:
        out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the M9 process exited with status {proc.returncode}")
    return [Metric(**json.loads(out.decode().strip().splitlines()[-1]))]


async def measure_m9(unit: float, *, quick: bool, results: Path) -> list[Metric]:
    """M9 in this process: the live fleet first (its RSS), then the in-process profile."""
    fleet = F.Fleet()
    results.mkdir(parents=True, exist_ok=True)
    sampler = Sampler()
    sampler.start()
    try:
        live = await fleet_run(fleet, 3 if quick else 10, sampler)
    finally:
        sampler.stop()
    profile = await asyncio.to_thread(profile_rebuild, fleet, results, 0 if quick else 10)
    with open(results / "profile-m9.txt", "a", encoding="utf-8") as f:
        f.write("\n\nLive Service changes (kxds serving 500 streams), sampled:\n")
        f.write(sampler.report())
    spec, sl = live["service_change"], live["local_slice_change"]
    met = (spec["last_ack_p50_s"] <= 1.0 and spec["last_ack_p99_s"] <= 1.0
           and sl["last_ack_p50_s"] <= 0.3 and sl["last_ack_p99_s"] <= 0.3
           and sl["only_changed_nodes_pushed"] and spec["cpu_max_s"] <= 0.5
           and sl["cpu_max_s"] <= 0.5 and live["rss_mb"] <= 400)
    details = {**live, "in_process": profile, "profile_file": "profile-m9.txt"}
    return [Metric(id="M9", title=f"node fleet: Service change -> last ACK of "
                   f"{fleet.nodes} nodes", value=spec["last_ack_p50_s"], unit="s",
                   target=TARGET, met=met, cal=spec["last_ack_p50_s"] / unit,
                   details=details)]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.m9", description=__doc__)
    p.add_argument("--unit", type=float, required=True, help="calibration unit (s)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--results", type=Path, required=True)
    args = p.parse_args()
    try:
        metrics = asyncio.run(measure_m9(args.unit, quick=args.quick, results=args.results))
    except BaseException:
        print(f"[bench] M9 process logs kept in {procs.WORKDIR}", file=sys.stderr, flush=True)
        raise
    finally:
        procs.stop_all()
    shutil.rmtree(procs.WORKDIR, ignore_errors=True)
    print(json.dumps(asdict(metrics[0])), flush=True)


if __name__ == "__main__":
    main()
