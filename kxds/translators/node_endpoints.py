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
from kxds.translators.services import SliceIndex, port_candidates, select_endpoints

ZONE_PREFERENCES = frozenset({"PreferClose", "PreferSameZone"})
"""``trafficDistribution`` values that ask for same-zone endpoints first."""


class ServiceSlices:
    """The IP EndpointSlices of one Service, indexed once for all its ports."""

    __slots__ = ("_hints", "index", "slices")

    def __init__(self, state: ClusterState, svc: Service) -> None:
        # FQDN slices name hosts for Envoy to resolve: they cannot be sorted by node
        # or zone, and a per-node EDS cluster cannot hold them.
        self.slices = tuple(s for s in state.slices_by_service.get(svc.meta.key, ())
                            if s.address_type != "FQDN")
        self.index = SliceIndex.of(self.slices)
        self._hints: dict[str, tuple[str, ...]] | None = None

    def hints(self) -> dict[str, tuple[str, ...]]:
        """Endpoint address -> ``hints.forZones`` names (computed on first use)."""
        if self._hints is None:
            self._hints = _hints(self.slices)
        return self._hints


def port_endpoints(found: ServiceSlices, svc: Service, sp: ServicePort, node: NodeInfo,
                   *, local: bool) -> tuple[tuple[Endpoint, ...], set[Diagnostic]]:
    """The endpoints of ``sp`` for the proxy on ``node``, priorities set; and the problems.

    ``found``: the Service's slices (:class:`ServiceSlices`, built once per Service).
    """
    problems = _protocol_mismatches(found.index, svc, sp)
    candidates = port_candidates(sp, found.index, problems)
    if local:
        candidates = [c for c in candidates if c[0].node == node.name]
        return select_endpoints(candidates), problems
    endpoints = select_endpoints(candidates)
    if node.zone is None:
        return endpoints, problems
    same_zone = _same_zone(svc, found, endpoints, node.zone)
    if same_zone is None:
        return endpoints, problems
    ranked = [replace(e, priority=0 if same_zone(e) else 1) for e in endpoints]
    ranked.sort(key=lambda e: (e.priority, e.zone or "", e.address, e.port, e.node or ""))
    return tuple(ranked), problems


def _protocol_mismatches(index: SliceIndex, svc: Service, sp: ServicePort) -> set[Diagnostic]:
    """Slice ports named like ``sp`` but with another protocol: their endpoints are unused."""
    return {
        Diagnostic(sl.meta.ref, f"ports[{i}].protocol", Reason.INVALID_VALUE,
                   f"port {p.name!r} is {p.protocol} here but {sp.protocol} on Service "
                   f"{sl.meta.namespace}/{sl.service_name}; its endpoints are not used")
        for sl, i, p in index.named(sp) if p.protocol != sp.protocol
    }


def _same_zone(svc: Service, found: ServiceSlices, endpoints: tuple[Endpoint, ...],
               zone: str) -> Callable[[Endpoint], bool] | None:
    hints = found.hints()
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


def local_endpoint_count(found: ServiceSlices, node: NodeInfo) -> int:
    """Ready endpoints of a Service (its slices ``found``) on ``node``: what the health
    check port reports.

    Counted by address across all ports (kube-proxy counts endpoints, not
    ports); terminating endpoints do not count, so load balancers drain the node.
    """
    addresses = {
        ep.addresses[0]
        for sl in found.slices
        for ep in sl.endpoints
        if ep.node_name == node.name and ep.ready and not ep.terminating
    }
    return len(addresses)
