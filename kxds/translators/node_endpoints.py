"""Which endpoints a per-node proxy sends a Service port to, and in which order.

Endpoint readiness is the cluster translation's (:mod:`kxds.translators.services`);
this module adds what depends on the node:

- ``externalTrafficPolicy: Local`` keeps only endpoints whose EndpointSlice
  ``nodeName`` is this node (and falls back to this node's serving-but-terminating
  ones, as kube-proxy does since KEP-1669, never to other nodes).
- Topology: with the node's zone known, same-zone endpoints get Envoy priority 0
  and the rest priority 1, so traffic stays in the zone while it has a healthy
  endpoint and fails over otherwise. Zones come from the EndpointSlice
  ``hints.forZones`` when every endpoint has hints (kube-proxy ignores hints
  unless all endpoints carry them), else from the endpoint ``zone`` when the
  Service asks for it with ``trafficDistribution: PreferClose``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import replace

from kxds.diagnostics import Diagnostic, Reason
from kxds.ir import Endpoint
from kxds.kube.models import ClusterState, EndpointSlice, Service, ServicePort
from kxds.translators.config import NodeInfo
from kxds.translators.services import _candidates, select_endpoints

ZONE_PREFERENCES = frozenset({"PreferClose", "PreferSameZone"})
"""``trafficDistribution`` values that ask for same-zone endpoints first."""


def _ip_slices(state: ClusterState, svc: Service) -> tuple[EndpointSlice, ...]:
    # FQDN slices name hosts for Envoy to resolve: they cannot be sorted by node
    # or zone, and a per-node EDS cluster cannot hold them.
    return tuple(s for s in state.slices_by_service.get(svc.meta.key, ())
                 if s.address_type != "FQDN")


def port_endpoints(state: ClusterState, svc: Service, sp: ServicePort, node: NodeInfo,
                   *, local: bool) -> tuple[tuple[Endpoint, ...], set[Diagnostic]]:
    """The endpoints of ``sp`` for the proxy on ``node``, priorities set; and the problems."""
    slices = _ip_slices(state, svc)
    problems = _protocol_mismatches(slices, sp)
    candidates = _candidates(sp, slices, problems)
    if local:
        candidates = [c for c in candidates if c[0].node == node.name]
        return select_endpoints(candidates), problems
    endpoints = select_endpoints(candidates)
    if node.zone is None:
        return endpoints, problems
    same_zone = _same_zone(svc, slices, endpoints, node.zone)
    if same_zone is None:
        return endpoints, problems
    ranked = [replace(e, priority=0 if same_zone(e) else 1) for e in endpoints]
    ranked.sort(key=lambda e: (e.priority, e.zone or "", e.address, e.port, e.node or ""))
    return tuple(ranked), problems


def _protocol_mismatches(slices: tuple[EndpointSlice, ...], sp: ServicePort) -> set[Diagnostic]:
    """Slice ports named like ``sp`` but with another protocol: their endpoints are unused."""
    return {
        Diagnostic(sl.meta.ref, f"ports[{i}].protocol", Reason.INVALID_VALUE,
                   f"port {p.name!r} is {p.protocol} here but {sp.protocol} on Service "
                   f"{sl.meta.namespace}/{sl.service_name}; its endpoints are not used")
        for sl in slices for i, p in enumerate(sl.ports)
        if p.name == sp.name and p.protocol != sp.protocol
    }


def _same_zone(svc: Service, slices: tuple[EndpointSlice, ...],
               endpoints: tuple[Endpoint, ...], zone: str) -> Callable[[Endpoint], bool] | None:
    hints = _hints(slices)
    if endpoints and all(hints.get(e.address) for e in endpoints):
        return lambda e: zone in hints.get(e.address, ())
    if svc.traffic_distribution in ZONE_PREFERENCES:
        return lambda e: e.zone == zone
    return None


def _hints(slices: tuple[EndpointSlice, ...]) -> dict[str, tuple[str, ...]]:
    """Endpoint address -> ``hints.forZones`` names."""
    out: dict[str, tuple[str, ...]] = {}
    for sl in slices:
        for ep in sl.endpoints:
            try:
                address = str(ipaddress.ip_address(ep.addresses[0]))
            except ValueError:
                continue
            out[address] = ep.hints_for_zones
    return out


def local_endpoint_count(state: ClusterState, svc: Service, node: NodeInfo) -> int:
    """Ready endpoints of ``svc`` on ``node``: what the health check port reports.

    Counted by address across all ports (kube-proxy counts endpoints, not
    ports); terminating endpoints do not count, so load balancers drain the node.
    """
    addresses = {
        ep.addresses[0]
        for sl in _ip_slices(state, svc)
        for ep in sl.endpoints
        if ep.node_name == node.name and ep.ready and not ep.terminating
    }
    return len(addresses)
