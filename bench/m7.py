"""M7: push minimality under a rolling-update burst (delta xDS).

S Services each roll all k pods, one pod at a time, interleaved across the
Services (a Deployment rollout with maxSurge 1 on each), with a few
milliseconds between EndpointSlice updates, while a real delta Envoy and K
light delta clients subscribe to every endpoint resource. The controller
coalesces the burst into a few rebuilds.

minimality = endpoint resources delivered / (changed endpoint resources x
subscribers), where "changed" counts, for each view kxds published, the
endpoint resources whose version differs from the previous view. 1.0 means
every subscriber got each changed resource exactly once and nothing else;
any cluster, listener or route response during the burst is a failure.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench import scenario
from bench.live import ControlPlane, LightClients, poll
from bench.m1 import wait_loaded
from bench.procs import Envoy
from bench.report import Metric
from bench.scenario import Spec
from kxds import names
from kxds.envoy.resource import ENDPOINT
from kxds.kube.models import EndpointSlice

TARGET = "delivered / (changed x subscribers) = 1.0 in delta; no other types"
SERVICES = 200
GAP = 0.015
"""Between two EndpointSlice updates: a burst spanning several debounce windows."""
TYPES = ("clusters", "listeners", "routes", "secrets")


def counters(cp: ControlPlane) -> dict[str, float]:
    out = {f"resources:{t}": cp.counter("kxds_xds_resources_sent_total",
                                        {"type": t, "protocol": "delta"})
           for t in ("endpoints", *TYPES)}
    out.update({f"responses:{t}": cp.counter("kxds_xds_responses_total",
                                             {"type": t, "protocol": "delta"})
                for t in ("endpoints", *TYPES)})
    return out


async def run_m7(unit: float, quick: bool = False) -> list[Metric]:
    rolling = 10 if quick else 20
    light = 10
    spec = Spec(services=SERVICES, endpoints=5)
    state = scenario.build_state(spec)
    cp = ControlPlane()  # the default debounce: 50 ms holdoff, 250 ms cap
    envoy: Envoy | None = None
    clients: LightClients | None = None
    all_names = [names.service_cluster(scenario.namespace_of(spec, i), scenario.service_name(i),
                                       scenario.SERVICE_PORT) for i in range(SERVICES)]
    try:
        await cp.start(state)
        envoy = Envoy("m7", cp.port, delta=True, node_id="m7-envoy")
        await wait_loaded(envoy, SERVICES)
        clients = LightClients(cp.port, light, all_names, protocol="delta", prefix="m7")
        await clients.start()
        await asyncio.sleep(0.5)  # let initial ACKs settle
        before = counters(cp)
        views_before = len(cp.views.changes)
        events_before = len(clients.events)
        updates = 0
        rolled = list(range(0, SERVICES, SERVICES // rolling))[:rolling]
        for step in range(1, spec.endpoints + 1):
            for i in rolled:
                new = scenario.parse(scenario.slice_doc(spec, i, generation=7, rolled=step))
                assert isinstance(new, EndpointSlice)
                state = scenario.with_slice(state, new)
                cp.publish(state)
                updates += 1
                await asyncio.sleep(GAP)
        # Converged: every subscriber holds the final version of every rolled resource.
        await asyncio.sleep(cp.max_holdoff)
        targets = [all_names[i] for i in rolled]

        def converged() -> bool:
            for n in targets:
                r = cp.resource(ENDPOINT, n)
                assert r is not None and clients is not None
                if cp.acked_version("m7-envoy", ENDPOINT, n) != r.version:
                    return False
                if len(clients.received(n, r.version)) < light:
                    return False
            return True

        await poll(converged, 30.0, 0.01, "convergence")
        await asyncio.sleep(0.2)
        after = counters(cp)
        moved = {k: after[k] - before[k] for k in after}
        changes = cp.views.changes[views_before:]
        changed_eds = sum(c.get(ENDPOINT, 0) for c in changes)
        other_changed = {t: n for c in changes for t, n in c.items() if t != ENDPOINT}
        subscribers = light + 1
        delivered = moved["resources:endpoints"]
        ratio = delivered / (changed_eds * subscribers) if changed_eds else float("nan")
        client_side = sum(e["n"] for e in clients.events[events_before:])
        others = {k: v for k, v in moved.items() if not k.endswith(":endpoints") and v}
        details: dict[str, Any] = {
            "services": SERVICES, "rolled_services": rolling, "endpoints_per_service": 5,
            "slice_updates": updates, "views_published": len(changes),
            "changed_endpoint_resources": changed_eds, "subscribers": subscribers,
            "endpoint_resources_delivered": delivered,
            "endpoint_responses": moved["responses:endpoints"],
            "light_client_resources_received": client_side,
            "light_client_expected": changed_eds * light,
            "other_types_sent": others, "other_types_changed_in_views": other_changed,
            "gap_between_updates_s": GAP, "holdoff_s": cp.holdoff, "max_holdoff_s": cp.max_holdoff,
        }
        met = abs(ratio - 1.0) < 1e-9 and not others
        return [Metric(id="M7", title="push minimality, rolling update (delta)", value=ratio,
                       unit="ratio", target=TARGET, met=met, details=details)]
    finally:
        if clients is not None:
            await clients.stop()
        if envoy is not None:
            envoy.stop()
        await cp.stop()
