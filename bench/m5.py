"""M5: one endpoint change delivered to K ADS streams.

K-1 light gRPC clients (another process, ``bench.adsclient``) and one real
Envoy subscribe to the endpoints of 1,000 Services. One EndpointSlice changes;
the sample is the time from publishing the new state until kxds has received
the ACK of the new version from every one of the K streams (the cache's
per-node tracker, polled every 5 ms). The bytes kxds serialized for the change
come from the views it published; they must not grow with K (resources are
serialized once and shared by every stream).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bench import scenario
from bench.live import ControlPlane, LightClients, poll
from bench.m1 import wait_loaded
from bench.procs import Envoy
from bench.report import Metric
from bench.scenario import Spec
from bench.timing import Summary
from kxds import names
from kxds.envoy.resource import ENDPOINT
from kxds.kube.models import EndpointSlice

TARGET = "last ACK < 1 s at K=1000; serialized bytes independent of K"
SERVICES = 1000
HOLDOFF = 0.005


def all_acked(cp: ControlPlane, prefix: str, count: int, name: str, version: str
              ) -> Callable[[], bool]:
    """A predicate: kxds has received the ACK of ``name`` at ``version`` from every stream."""
    nodes = [f"{prefix}-{i}" for i in range(count)]
    return lambda: all(cp.acked_version(n, ENDPOINT, name) == version for n in nodes)


async def fan_out(k: int, repeats: int, unit: float) -> dict[str, Any]:
    spec = Spec(services=SERVICES)
    state = scenario.build_state(spec)
    cp = ControlPlane(holdoff=HOLDOFF, max_holdoff=0.05)
    envoy: Envoy | None = None
    clients: LightClients | None = None
    targets = list(range(0, SERVICES, SERVICES // 10))[:10]
    target_names = [names.service_cluster(scenario.namespace_of(spec, i), scenario.service_name(i),
                                          scenario.SERVICE_PORT) for i in targets]
    try:
        await cp.start(state)
        envoy = Envoy(f"m5-{k}", cp.port, node_id=f"m5-envoy-{k}")
        await wait_loaded(envoy, SERVICES)
        if k > 1:
            clients = LightClients(cp.port, k - 1, target_names, prefix=f"m5-{k}")
            await clients.start()
        lat: list[float] = []
        nbytes: list[int] = []
        resp_bytes: list[float] = []
        for r in range(repeats + 1):
            i = targets[r % len(targets)]
            name = target_names[r % len(targets)]
            new = scenario.parse(scenario.slice_doc(spec, i, generation=100 + r))
            assert isinstance(new, EndpointSlice)
            state = scenario.with_slice(state, new)
            old = cp.resource(ENDPOINT, name)
            views_before = len(cp.views.changed_bytes)
            sent_before = cp.counter("kxds_xds_response_bytes_total",
                                     {"type": "endpoints", "protocol": "sotw"})
            t0 = time.time()
            cp.publish(state)
            await poll(cp.replaced(ENDPOINT, name, old), 10.0, what="rebuild")
            res = cp.resource(ENDPOINT, name)
            assert res is not None
            await poll(cp.acked(f"m5-envoy-{k}", ENDPOINT, name, res.version), 30.0,
                       what="Envoy ACK")
            t_last = time.time()
            if clients is not None:
                t_last = await poll(all_acked(cp, f"m5-{k}", k - 1, name, res.version), 60.0,
                                    0.005, what=f"{k - 1} light streams")
                t_last = time.time() - (time.perf_counter() - t_last)
            if r:  # the first change warms the path
                lat.append(t_last - t0)
                nbytes.append(sum(cp.views.changed_bytes[views_before:]))
                resp_bytes.append(cp.counter("kxds_xds_response_bytes_total",
                                             {"type": "endpoints", "protocol": "sotw"})
                                  - sent_before)
            await asyncio.sleep(0.05)
        s = Summary.of(lat)
        return {"k": k, "last_ack": s, "serialized_bytes": max(nbytes),
                "response_bytes": Summary.of(resp_bytes).median,
                "last_ack_cal": s.median / unit}
    finally:
        if clients is not None:
            await clients.stop()
        if envoy is not None:
            envoy.stop()
        await cp.stop()


async def run_m5(ks: tuple[int, ...], unit: float, repeats: int = 5) -> list[Metric]:
    results = [await fan_out(k, repeats, unit) for k in ks]
    top = results[-1]
    serialized = {r["k"]: r["serialized_bytes"] for r in results}
    independent = len(set(serialized.values())) == 1
    details: dict[str, Any] = {str(r["k"]): {"last_ack_p50_s": r["last_ack"].median,
                             "last_ack_p99_s": r["last_ack"].p99,
                             "last_ack_cal": r["last_ack_cal"],
                             "bytes_serialized_per_change": r["serialized_bytes"],
                             "endpoint_response_bytes_sent": r["response_bytes"],
                             "samples": r["last_ack"].n} for r in results}
    details.update({"services": SERVICES, "holdoff_s": HOLDOFF,
                    "bytes_independent_of_k": independent,
                    "streams": "1 real Envoy (SotW) + K-1 light SotW ADS clients"})
    met = top["last_ack"].median < 1.0 and top["last_ack"].p99 < 1.0 and independent
    return [Metric(id="M5", title=f"one endpoint change -> last ACK of K={top['k']} streams",
                   value=top["last_ack"].median, unit="s", target=TARGET, met=met,
                   cal=top["last_ack_cal"], details=details)]
