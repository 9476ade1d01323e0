"""A Service with thousands of ports: matching its ports is linear, and the edge builds
only the clusters something routes to.

Each Service port is matched to the EndpointSlice ports of the same name. A scan of
every slice port per Service port made a 20,000-port Service take 12.6 s to
rebuild; the slices are now indexed once per Service. The time bounds below are
generous for a linear pass (which takes a small fraction of them) and far below
what the quadratic pass took (0.7 s for one Service of 5,000 ports, and 3 s for
its per-node view; four times that at 10,000).
"""

from __future__ import annotations

import time

import pytest

from kxds.kube import models as m
from kxds.kube.models import ClusterState
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.edge import translate
from kxds.translators.node import translate_node
from kxds.translators.services import translate_service

PORTS = 10_000
PER_SLICE = 100
BOUND_SECONDS = 1.0


def _many_ports(n: int = PORTS) -> ClusterState:
    """A LoadBalancer Service with ``n`` ports, its slices (100 ports, one endpoint
    each) and an Ingress routing to one of its ports; built as models directly."""
    service = m.Service(
        meta=m.Meta(kind="Service", namespace="default", name="big"), type="LoadBalancer",
        ports=tuple(m.ServicePort(name=f"p{i}", port=10000 + i, target_port=20000 + i)
                    for i in range(n)),
        load_balancer_ingress=("203.0.113.7",), allocate_load_balancer_node_ports=False)
    slices = [m.EndpointSlice(
        meta=m.Meta(kind="EndpointSlice", namespace="default", name=f"big-{s}"),
        service_name="big",
        ports=tuple(m.EndpointPort(name=f"p{i}", port=20000 + i)
                    for i in range(s, min(n, s + PER_SLICE))),
        endpoints=(m.SliceEndpoint(addresses=(f"10.0.{s // 256}.{s % 256}",), node_name="n1"),))
        for s in range(0, n, PER_SLICE)]
    ingress = m.Ingress(
        meta=m.Meta(kind="Ingress", namespace="default", name="one"), ingress_class_name="kxds",
        rules=(m.IngressRule(host="big.example", paths=(m.IngressPath(
            path="/", path_type="Prefix",
            backend=m.IngressBackend(service="big", port_name="p4321")),)),))
    return ClusterState.from_objects([service, *slices, ingress])


@pytest.fixture(scope="module")
def state() -> ClusterState:
    return _many_ports()


def _timed(run: object) -> tuple[object, float]:
    start = time.perf_counter()
    result = run()  # type: ignore[operator]
    return result, time.perf_counter() - start


def test_every_port_matched_in_linear_time(state: ClusterState) -> None:
    service = state.services[("default", "big")]
    slices = state.slices_by_service[("default", "big")]
    one, spent = _timed(lambda: translate_service(service, slices))
    assert len(one.clusters) == PORTS  # type: ignore[attr-defined]
    # Each port got exactly its own endpoint and target port.
    by_name = {a.cluster: a for a in one.load_assignments}  # type: ignore[attr-defined]
    assignment = by_name["default/big/14321"]
    assert [(e.address, e.port) for e in assignment.endpoints] == [("10.0.16.204", 24321)]
    assert spent < BOUND_SECONDS, f"{PORTS} ports took {spent:.2f} s"


def test_node_view_linear(state: ClusterState) -> None:
    view, spent = _timed(lambda: translate_node(state, TranslateConfig(), NodeInfo(name="n1",
                                                                                     zone="z")))
    assert len(view.ir.listeners) == PORTS  # type: ignore[attr-defined]
    assert spent < 2 * BOUND_SECONDS, f"node view of {PORTS} ports took {spent:.2f} s"


def test_edge_builds_only_routed_ports(state: ClusterState) -> None:
    result, spent = _timed(lambda: translate(state))
    clusters = [c.name for c in result.ir.clusters]  # type: ignore[attr-defined]
    assert clusters == ["default/big/14321"]
    (assignment,) = result.ir.load_assignments  # type: ignore[attr-defined]
    assert [e.port for e in assignment.endpoints] == [24321]
    assert spent < BOUND_SECONDS, f"edge view took {spent:.2f} s"
