"""Services and EndpointSlices -> clusters and load assignments.

A TCP or UDP port of a Service becomes one cluster named
``namespace/service/port`` (:func:`kxds.names.service_cluster`; UDP ports add
``/udp``, as :func:`kxds.names.node_cluster` names them); the edge view asks
only for the ports that something routes to (:func:`translate_service`'s
``wanted``). Its endpoints
come from the Service's EndpointSlices: a slice port belongs to a Service port
when their names are equal (the slice port's ``port`` is the target port
number), as kube-proxy matches them.

Readiness follows the EndpointSlice API (KEP-1672): endpoints with
``conditions.ready`` take traffic; endpoints that are ``serving`` but
``terminating`` are used only when no ready endpoint remains, and are marked
draining. ``addressType: FQDN`` slices and ``type: ExternalName`` Services
become STRICT_DNS clusters: Envoy resolves the names itself.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from operator import attrgetter

from kxds import names
from kxds.diagnostics import Diagnostic, Reason
from kxds.ir import Cluster, ClusterKind, Endpoint, LoadAssignment, UpstreamProtocol
from kxds.kube.models import ClusterState, EndpointPort, EndpointSlice, Service, ServicePort
from kxds.translators.guards import check_external_name
from kxds.translators.service_health import NO_HEALTH, ServiceHealth, service_health

HTTP2_APP_PROTOCOLS = frozenset({"kubernetes.io/h2c", "h2c", "grpc"})
"""``appProtocol`` values that mean cleartext HTTP/2 to the backend.

``kubernetes.io/h2c`` is the standard name (Service API docs, "Application
protocol"); ``h2c`` and ``grpc`` are the unprefixed names users write.
"""


@dataclass(slots=True)
class ServiceClusters:
    """What :func:`translate_services` produces."""

    clusters: list[Cluster] = field(default_factory=list)
    load_assignments: list[LoadAssignment] = field(default_factory=list)
    diagnostics: set[Diagnostic] = field(default_factory=set)


def upstream_protocol(service_port: ServicePort) -> UpstreamProtocol | None:
    """The protocol Envoy speaks to this port's backends; None when Envoy cannot (SCTP)."""
    if service_port.protocol == "UDP":
        return UpstreamProtocol.UDP
    if service_port.protocol != "TCP":
        return None
    if (service_port.app_protocol or "").lower() in HTTP2_APP_PROTOCOLS:
        return UpstreamProtocol.HTTP2
    return UpstreamProtocol.HTTP1


def translate_services(state: ClusterState) -> ServiceClusters:
    """One cluster (and, for EDS, one load assignment) per Service port, sorted by name."""
    out = ServiceClusters()
    slices = state.slices_by_service
    for key, service in state.services.items():
        _translate_service(service, slices.get(key, ()), None, out)
    out.clusters.sort(key=attrgetter("name"))
    out.load_assignments.sort(key=attrgetter("cluster"))
    return out


@dataclass(frozen=True, slots=True)
class OneService:
    """The clusters, load assignments and problems of one Service."""

    clusters: tuple[Cluster, ...]
    load_assignments: tuple[LoadAssignment, ...]
    diagnostics: frozenset[Diagnostic]
    failed: bool = False
    """Its translation failed (a bug): it has no clusters, and routes to it answer 503."""


def translate_service(service: Service, slices: tuple[EndpointSlice, ...],
                      wanted: Container[str] | None = None) -> OneService:
    """The clusters of the ports of ``service``, whose EndpointSlices are ``slices``.

    ``wanted``: the cluster names to build (those something routes to); None
    builds every port's. The Service's own problems (a refused ExternalName, a
    protocol Envoy cannot proxy) are reported either way.
    """
    out = ServiceClusters()
    _translate_service(service, slices, wanted, out)
    return OneService(tuple(out.clusters), tuple(out.load_assignments),
                      frozenset(out.diagnostics))


def port_cluster(service: Service, sp: ServicePort) -> str | None:
    """The cluster name of ``sp``; None when Envoy cannot proxy its protocol (SCTP).

    A port number may serve both TCP and UDP (DNS): UDP clusters get a ``/udp``
    suffix (:func:`kxds.names.node_cluster`).
    """
    if upstream_protocol(sp) is None:
        return None
    return names.node_cluster(service.meta.namespace, service.meta.name, sp.port, sp.protocol,
                              local=False)


def cluster_names(service: Service) -> frozenset[str]:
    """The names of every cluster ``service`` may have: a function of the Service alone
    (not of its endpoints), so what routes may name does not move with endpoint churn."""
    if check_external_name(service) is not None:
        return frozenset()
    return frozenset(n for sp in service.ports if (n := port_cluster(service, sp)) is not None)


def _translate_service(service: Service, slices: tuple[EndpointSlice, ...],
                       wanted: Container[str] | None, out: ServiceClusters) -> None:
    refused = check_external_name(service)
    if refused is not None:
        out.diagnostics.add(refused)
        return
    health = service_health(service)
    out.diagnostics.update(health.diagnostics)
    index: SliceIndex | None = None
    for i, sp in enumerate(service.ports):
        name = port_cluster(service, sp)
        if name is None:
            out.diagnostics.add(Diagnostic(
                service.meta.ref, f"spec.ports[{i}].protocol", Reason.UNSUPPORTED,
                f"protocol {sp.protocol} of port {sp.port} is not supported; the port is "
                "skipped"))
            continue
        if wanted is not None and name not in wanted:
            continue  # nothing routes to it: no cluster (a port costs each Envoy memory)
        if index is None:
            index = SliceIndex.of(slices)  # once per Service: matching stays linear
        _translate_port(service, sp, name, slices, index, out, health)


def _translate_port(service: Service, sp: ServicePort, name: str,
                    slices: tuple[EndpointSlice, ...], index: SliceIndex,
                    out: ServiceClusters, health: ServiceHealth = NO_HEALTH) -> None:
    protocol = upstream_protocol(sp)
    assert protocol is not None
    ref = service.meta.ref
    check = health.health_check if protocol is not UpstreamProtocol.UDP else None
    if service.type == "ExternalName":
        # The Service port is the port on the external name (targetPort does not apply).
        out.clusters.append(Cluster(name=name, ref=ref, kind=ClusterKind.STRICT_DNS,
                                    protocol=protocol, dns_host=service.external_name,
                                    dns_port=sp.port,
                                    outlier_detection=health.outlier_detection,
                                    health_check=check))
        return
    endpoints = select_endpoints(port_candidates(sp, index, out.diagnostics))
    kind = ClusterKind.STRICT_DNS if index.fqdn else ClusterKind.EDS
    out.clusters.append(Cluster(name=name, ref=ref, kind=kind, protocol=protocol,
                                outlier_detection=health.outlier_detection,
                                health_check=check))
    out.load_assignments.append(LoadAssignment(cluster=name, ref=ref, endpoints=endpoints))


SlicePort = tuple[EndpointSlice, int, EndpointPort]
"""A port of an EndpointSlice: the slice, the port's position in it, the port."""


@dataclass(frozen=True, slots=True)
class SliceIndex:
    """The EndpointSlices of one Service, their ports indexed by name.

    Built once per Service, so that matching each Service port to its slice
    ports costs time in proportion to what matches, not to every slice port
    (a Service with thousands of ports made that quadratic).
    """

    by_name: Mapping[str, tuple[SlicePort, ...]]
    """Slice port name -> the slice ports of that name, in slice order."""
    fqdn: bool
    """Whether a slice has ``addressType: FQDN`` (the cluster is then STRICT_DNS)."""

    @classmethod
    def of(cls, slices: Iterable[EndpointSlice]) -> SliceIndex:
        by_name: dict[str, list[SlicePort]] = {}
        fqdn = False
        for sl in slices:
            fqdn = fqdn or sl.address_type == "FQDN"
            for i, p in enumerate(sl.ports):
                by_name.setdefault(p.name, []).append((sl, i, p))
        return cls({k: tuple(v) for k, v in by_name.items()}, fqdn)

    def named(self, sp: ServicePort) -> tuple[SlicePort, ...]:
        """The slice ports named like ``sp`` (any protocol)."""
        return self.by_name.get(sp.name, ())

    def matching(self, sp: ServicePort) -> list[tuple[EndpointSlice, list[int]]]:
        """Each slice with ports of ``sp`` (same name and protocol), and their numbers."""
        out: list[tuple[EndpointSlice, list[int]]] = []
        for sl, _, p in self.named(sp):
            if p.protocol != sp.protocol or p.port is None:
                continue
            if out and out[-1][0] is sl:
                out[-1][1].append(p.port)
            else:
                out.append((sl, [p.port]))
        return out


def port_candidates(sp: ServicePort, index: SliceIndex, diagnostics: set[Diagnostic]
                    ) -> list[tuple[Endpoint, bool, bool]]:
    """Every endpoint of ``sp`` in the indexed slices as (endpoint, ready,
    serving-while-terminating)."""
    out: list[tuple[Endpoint, bool, bool]] = []
    for sl, ports in index.matching(sp):
        address_type = sl.address_type
        for i, ep in enumerate(sl.endpoints):
            # "Consumers may choose to only use the first element" (EndpointSlice API):
            # the addresses of one endpoint are fungible.
            address, problem = check_address(ep.addresses[0], address_type)
            if address is None:
                diagnostics.add(Diagnostic(sl.meta.ref, f"endpoints[{i}].addresses[0]",
                                           Reason.INVALID_VALUE, problem))
                continue
            ready, terminating = ep.ready, ep.serving and ep.terminating
            for port in ports:
                endpoint = Endpoint(address=address, port=port, zone=ep.zone, node=ep.node_name)
                out.append((endpoint, ready, terminating))
    return out


def select_endpoints(candidates: list[tuple[Endpoint, bool, bool]]) -> tuple[Endpoint, ...]:
    """Ready endpoints; or, when none is ready, the serving-but-terminating ones as draining.

    The same address and port may appear in two slices while a slice is being
    replaced; it is kept once.
    """
    chosen = [e for e, is_ready, _ in candidates if is_ready]
    if not chosen:
        chosen = [_draining(e) for e, is_ready, terminating in candidates
                  if terminating and not is_ready]
    # Deduplicated and sorted on a key that stands for every field (an Endpoint
    # equals another exactly when their keys are equal), so that endpoints alike
    # in the sort order's fields (a zone unset or empty, say) keep one order: a
    # set sorted on those fields alone left it to the hash seed.
    unique = {(e.priority, e.zone or "", e.address, e.port, e.node or "",
               e.zone is None, e.node is None, e.draining): e for e in chosen}
    return tuple(unique[k] for k in sorted(unique))


def _draining(e: Endpoint) -> Endpoint:
    return Endpoint(address=e.address, port=e.port, zone=e.zone, node=e.node,
                    priority=e.priority, draining=True)


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
"""A dotted quad already in canonical form (no leading zeros)."""


def check_address(address: str, address_type: str) -> tuple[str | None, str]:
    """``(normalized address, "")``, or ``(None, why)`` when it is not of ``address_type``.

    Nearly every EndpointSlice address is an IPv4 dotted quad already in
    canonical form: one regular expression match recognizes it, at a third of
    the cost of a memo miss (a cold start misses on every address; parsing
    with :mod:`ipaddress` once dominated its translation time). Anything else
    takes the full, memoized check.
    """
    if address_type == "IPv4" and _CANONICAL_IPV4.fullmatch(address) is not None:
        return address, ""
    return _check_address(address, address_type)


@lru_cache(maxsize=1 << 16)
def _check_address(address: str, address_type: str) -> tuple[str | None, str]:
    """:func:`check_address` by parsing; memoized, as the same addresses come back."""
    if address_type == "FQDN":
        labels = address.rstrip(".").split(".")
        if all(lbl and len(lbl) <= 63 and all(c.isalnum() or c == "-" for c in lbl)
               for lbl in labels):
            return address.rstrip(".").lower(), ""
        return None, f"{address!r} is not a valid DNS name"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None, f"{address!r} is not a valid {address_type} address"
    if ip.version != (4 if address_type == "IPv4" else 6):
        return None, f"{address!r} is not an {address_type} address"
    return str(ip), ""
