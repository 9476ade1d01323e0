"""The node-fleet scenario of M9: many per-node proxies, NodePort/LoadBalancer Services.

``services`` Services of type NodePort (every other one LoadBalancer, with an
ingress IP), every ``local_every``-th with ``externalTrafficPolicy: Local`` and
a ``healthCheckNodePort``; one EndpointSlice each, whose endpoints are spread
over ``nodes`` nodes (``node-0`` ...), so a Local Service has endpoints on a
few nodes only. Built through :mod:`bench.scenario` (the same parser), without
Ingresses; deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import scenario
from bench.scenario import Doc, Spec
from kxds.kube.models import ClusterState, EndpointSlice, Service

NODE_PORT_BASE = 30000
FREE_PORT_BASE = 31000
"""nodePorts no Service of up to 1,000 uses: where spec changes move them."""
HEALTH_PORT_BASE = 31500
"""healthCheckNodePorts: above every nodePort of up to 1,000 Services and the moved ones."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fleet:
    """The shape of a node-fleet scenario."""

    services: int = 1000
    nodes: int = 500
    local_every: int = 4
    """One Service in this many has ``externalTrafficPolicy: Local``."""
    endpoints: int = 3

    @property
    def spec(self) -> Spec:
        return Spec(services=self.services, endpoints=self.endpoints, policy_every=0,
                    with_ingresses=False)

    def local(self, i: int) -> bool:
        return i % self.local_every == 0


def node_name(n: int) -> str:
    return f"node-{n}"


def endpoint_node(fleet: Fleet, i: int, e: int, generation: int = 0) -> str:
    """The node of endpoint ``e`` of Service ``i`` (moves with the generation)."""
    return node_name((i * 7 + e * 131 + generation * 17) % fleet.nodes)


def service_doc(fleet: Fleet, i: int, node_port: int | None = None) -> Doc:
    """Service ``i``; ``node_port`` moves its nodePort (a spec change)."""
    doc = scenario.service_doc(fleet.spec, i)
    spec = doc["spec"]
    lb = i % 2 == 1
    spec["type"] = "LoadBalancer" if lb else "NodePort"
    spec["ports"][0]["nodePort"] = node_port or NODE_PORT_BASE + i
    if fleet.local(i):
        spec["externalTrafficPolicy"] = "Local"
        spec["healthCheckNodePort"] = HEALTH_PORT_BASE + i
        # The node's address, as kube-proxy's SNAT: no node here is set up for the
        # client's (which would only add a Fallback diagnostic per Service).
        doc["metadata"]["annotations"] = {"kxds.io/source-ip": "node"}
    if lb:
        n = i + 1
        # On loopback (127/8 is local on Linux): real per-node Envoys can bind them.
        doc["status"] = {"loadBalancer": {"ingress": [{"ip": f"127.1.{n >> 8}.{n & 255}"}]}}
    return doc


def slice_doc(fleet: Fleet, i: int, generation: int = 0) -> Doc:
    """The EndpointSlice of Service ``i``; a new ``generation`` replaces one pod, on
    another node (what a Local Service's rolling update does)."""
    doc = scenario.slice_doc(fleet.spec, i, generation=generation)
    for e, ep in enumerate(doc["endpoints"]):
        ep["nodeName"] = endpoint_node(fleet, i, e, generation if e == 0 else 0)
    return doc


def documents(fleet: Fleet) -> list[Doc]:
    out: list[Doc] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{n}"}}
                      for n in range(fleet.spec.namespace_count)]
    for i in range(fleet.services):
        out += [service_doc(fleet, i), slice_doc(fleet, i)]
    return out


def build_state(fleet: Fleet) -> ClusterState:
    return ClusterState.from_objects(scenario.parse(d) for d in documents(fleet))


def with_service(state: ClusterState, fleet: Fleet, i: int, node_port: int) -> ClusterState:
    """``state`` with Service ``i``'s nodePort moved to ``node_port``."""
    svc = scenario.parse(service_doc(fleet, i, node_port))
    assert isinstance(svc, Service)
    return scenario.with_objects(state, svc)


def with_slice(state: ClusterState, fleet: Fleet, i: int, generation: int) -> ClusterState:
    """``state`` with Service ``i``'s EndpointSlice at ``generation``."""
    new = scenario.parse(slice_doc(fleet, i, generation))
    assert isinstance(new, EndpointSlice)
    return scenario.with_slice(state, new)


def nodes_of(fleet: Fleet, i: int, generation: int = 0) -> set[str]:
    """The nodes with an endpoint of Service ``i`` at ``generation``."""
    return {endpoint_node(fleet, i, e, generation if e == 0 else 0)
            for e in range(fleet.endpoints)}
