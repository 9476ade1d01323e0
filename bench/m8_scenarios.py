"""M8 per change scenario: kxds's time for one change vs the real Envoy's time to apply it.

For the changes M1, M2 and M9 time end to end, each sample is one change:

- kxds time: from publishing the new state until the controller's rebuild is
  done, every view set on the cache (the push to the streams starts there; the
  debounce is leading-edge, so a change after a calm is rebuilt at once). The
  end is the instant the controller reports the rebuild to its metrics, taken
  there, not found by polling;
- Envoy time: what Envoy's ``update_duration`` histograms gained over that
  change, summed over every subscription that applied something (Envoy records
  whole milliseconds: an apply under 1 ms reads 0, and the ratio is then given
  against 1 ms, a lower bound). Envoy runs with ``stats_flush_on_admin`` so
  the histograms are merged when read, and each read is taken twice.

Scenarios: M1 an EndpointSlice change at 1,000 Services (EDS); M2 an Exact
path added to an Ingress at N = 100 / 1,000 / 3,000 routes (RDS: the whole
route table); M9 at 1,000 NodePort/LoadBalancer Services and 500 node streams
(2 real per-node Envoys, 498 light node clients) a Service's nodePort moved
(LDS) and a Local Service's pod moved (EDS, only the nodes concerned).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bench import fleet as F
from bench import scenario
from bench.live import ControlPlane, LightClients, poll
from bench.m1 import wait_loaded
from bench.m2 import with_path
from bench.procs import Envoy, free_port
from bench.scenario import Spec
from bench.timing import Summary
from kxds.envoy.resource import LISTENER
from kxds.kube.models import ClusterState, EndpointSlice
from kxds.translators.config import TranslateConfig

HIST = "update_duration"
RESOLUTION_S = 0.001


async def totals(envoy: Envoy) -> dict[str, tuple[float, int]]:
    """The update_duration histograms, merged: the first read flushes, the second reads."""
    await envoy.histogram_totals(HIST)
    await asyncio.sleep(0.2)
    return await envoy.histogram_totals(HIST)


async def settled_totals(envoy: Envoy, timeout: float = 30.0) -> dict[str, tuple[float, int]]:
    """:func:`totals` read again until two reads agree: whatever Envoy was still
    applying is in them."""
    last = await totals(envoy)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = await totals(envoy)
        if now == last:
            return now
        last = now
    raise AssertionError(f"Envoy's {HIST} histograms still moving after {timeout} s")


def applied(before: dict[str, tuple[float, int]], after: dict[str, tuple[float, int]]
            ) -> tuple[float, list[str]]:
    """Seconds Envoy spent applying between the two reads, and the series that moved."""
    moved = [k for k, v in after.items() if v[1] != before.get(k, (0.0, 0))[1]]
    ms = sum(after[k][0] - before.get(k, (0.0, 0))[0] for k in moved)
    return ms / 1e3, moved


async def sample(cp: ControlPlane, envoys: list[Envoy], state: ClusterState,
                 settled: Callable[[], bool] | None = None) -> tuple[float, float, list[str]]:
    """Publish ``state``: (kxds seconds to the rebuilt views, Envoy apply seconds, series)."""
    before = [await totals(e) for e in envoys]
    t0 = time.perf_counter()
    t1 = await cp.publish_and_wait(state)
    if settled is not None:
        await poll(settled, 60.0, 0.005, "applied")
    await asyncio.sleep(0.3)  # the push and Envoy's apply
    after = [await totals(e) for e in envoys]
    seconds, moved = 0.0, []
    for b, a in zip(before, after, strict=True):
        s, m = applied(b, a)
        seconds = max(seconds, s)
        moved += m
    return t1 - t0, seconds, moved


def summarize(label: str, kxds_s: list[float], envoy_s: list[float], moved: list[str]
              ) -> dict[str, Any]:
    k, e = Summary.of(kxds_s), Summary.of(envoy_s)
    floor = e.median < RESOLUTION_S
    ratio = k.median / max(e.median, RESOLUTION_S)
    out = {"kxds_p50_s": k.median, "kxds_p99_s": k.p99,
           "envoy_apply_p50_s": e.median, "envoy_apply_p99_s": e.p99,
           "ratio": ratio, "envoy_below_1ms": floor, "samples": k.n,
           "envoy_series": sorted(set(moved))[:6]}
    print(f"[bench] M8 {label}: kxds p50 {k.median * 1e3:.1f} ms, Envoy apply p50 "
          f"{'<1' if floor else f'{e.median * 1e3:.1f}'} ms, ratio "
          f"{'>=' if floor else ''}{ratio:.2f}", flush=True)
    return out


async def m1_case(repeats: int) -> dict[str, Any]:
    spec = Spec(services=1000)
    state = scenario.build_state(spec)
    cp = ControlPlane()  # kxds serve's debounce defaults
    envoy: Envoy | None = None
    try:
        await cp.start(state)
        envoy = Envoy("m8-m1", cp.port, flush_on_admin=True)
        await wait_loaded(envoy, spec.services)
        ks, es, moved = [], [], []
        for r in range(repeats + 1):
            new = scenario.parse(scenario.slice_doc(spec, (r * 37) % spec.services,
                                                    generation=r + 1))
            assert isinstance(new, EndpointSlice)
            state = scenario.with_slice(state, new)
            k, e, m = await sample(cp, [envoy], state)
            if r:  # the first change warms up
                ks.append(k)
                es.append(e)
                moved += m
        return summarize("M1 EndpointSlice change, N=1000", ks, es, moved)
    finally:
        if envoy is not None:
            envoy.stop()
        await cp.stop()


async def m2_case(n: int, repeats: int) -> dict[str, Any]:
    spec = Spec(services=n, endpoints=1, address=lambda i, e: ("127.0.0.1", 9))
    state = scenario.build_state(spec)
    cp = ControlPlane(holdoff=0.01, max_holdoff=0.1,
                      config=TranslateConfig(http_port=free_port(), listen_address="127.0.0.1"))
    envoy: Envoy | None = None
    try:
        await cp.start(state)
        envoy = Envoy(f"m8-m2-{n}", cp.port, flush_on_admin=True)
        await wait_loaded(envoy, n, timeout=300.0)
        ks, es, moved = [], [], []
        for r in range(repeats + 1):
            j = (r * 7) % spec.ingresses
            state = with_path(spec, state, j, ((f"/m8-{r}", j * spec.paths_per_ingress),))
            k, e, m = await sample(cp, [envoy], state)
            if r:
                ks.append(k)
                es.append(e)
                moved += m
        return summarize(f"M2 new Ingress path, N={n}", ks, es, moved)
    finally:
        if envoy is not None:
            envoy.stop()
        await cp.stop()


async def m9_case(repeats: int, nodes: int) -> dict[str, dict[str, Any]]:
    from bench.m9 import CONFIG, REAL, _local_cluster, _wait_envoy

    fleet = F.Fleet(services=1000, nodes=nodes)
    state = F.build_state(fleet)
    cp = ControlPlane(holdoff=0.005, max_holdoff=0.05, config=CONFIG)
    envoys: list[Envoy] = []
    clients: LightClients | None = None
    # Local Services whose pod moves onto a real Envoy's node: the generation is chosen
    # so (``bench.fleet.endpoint_node``: node = (7 i + 131 e + 17 g) mod nodes).
    targets = list(range(0, fleet.services, fleet.local_every))[:repeats + 1]
    inverse17 = pow(17, -1, fleet.nodes)

    def generation(r: int, i: int) -> int:
        node = fleet.nodes - REAL + r % REAL
        g = (node - 7 * i) * inverse17 % fleet.nodes
        assert F.endpoint_node(fleet, i, 0, g or fleet.nodes) == F.node_name(node)
        return g or fleet.nodes
    try:
        await cp.start(state)
        for k in range(REAL):
            n = fleet.nodes - REAL + k
            envoys.append(Envoy(f"m8-m9-{n}", cp.port, node_id=F.node_name(n), delta=k == 1,
                                per_node=True, flush_on_admin=True))
        clients = LightClients(cp.port, fleet.nodes - REAL,
                               [_local_cluster(fleet, i) for i in targets], protocol="delta",
                               prefix="node", role="node", listeners=True)
        await clients.start(timeout=600.0)
        for k, envoy in enumerate(envoys):
            view = cp.cache.view(f"node/{F.node_name(fleet.nodes - REAL + k)}")
            await _wait_envoy(envoy, len(view.of_type(LISTENER)) if view else 1)
        await asyncio.sleep(1.0)
        ks, es, moved = [], [], []
        for r in range(repeats + 1):
            state = F.with_service(state, fleet, 10 * r + 1, F.FREE_PORT_BASE + r)
            k, e, m = await sample(cp, envoys, state)
            if r:
                ks.append(k)
                es.append(e)
                moved += m
        service = summarize(f"M9 Service nodePort moved, {nodes} nodes", ks, es, moved)
        ks, es, moved = [], [], []
        for r, i in enumerate(targets):
            state = F.with_slice(state, fleet, i, generation(r, i))
            k, e, m = await sample(cp, envoys, state)
            if r:
                ks.append(k)
                es.append(e)
                moved += m
        local = summarize(f"M9 Local pod moved, {nodes} nodes", ks, es, moved)
        return {"service_change": service, "local_slice_change": local}
    finally:
        if clients is not None:
            await clients.stop()
        for envoy in envoys:
            envoy.stop()
        await cp.stop()


async def run_scenarios(repeats: int, m2_sizes: tuple[int, ...] = (100, 1000, 3000),
                        nodes: int = 500) -> dict[str, Any]:
    out: dict[str, Any] = {"m1_endpoint_change_1000": await m1_case(repeats)}
    for n in m2_sizes:
        out[f"m2_new_path_{n}"] = await m2_case(n, repeats)
    for kind, case in (await m9_case(repeats, nodes)).items():
        out[f"m9_{kind}_{nodes}_nodes"] = case
    return out
