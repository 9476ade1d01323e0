"""Typed models of the Kubernetes objects kxds reads, and :class:`ClusterState`.

Only the fields kxds uses are kept. Models are frozen, keyword-only, slotted
dataclasses; they are parsed and validated once (:mod:`kxds.kube.parse`) and
never mutated. Kubernetes shapes stop here: translators read these models, and
nothing after the translators sees them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from kxds.diagnostics import Diagnostic

# Re-exported: every model is reached through this module.
from kxds.kube.gateway_models import BackendTLSPolicy as BackendTLSPolicy
from kxds.kube.gateway_models import Gateway as Gateway
from kxds.kube.gateway_models import GatewayClass as GatewayClass
from kxds.kube.gateway_models import GRPCRoute as GRPCRoute
from kxds.kube.gateway_models import HTTPRoute as HTTPRoute
from kxds.kube.gateway_models import ReferenceGrant as ReferenceGrant
from kxds.kube.gateway_models import TCPRoute as TCPRoute
from kxds.kube.gateway_models import TLSRoute as TLSRoute
from kxds.kube.gateway_models import UDPRoute as UDPRoute
from kxds.kube.meta import Key as Key
from kxds.kube.meta import LabelSelector as LabelSelector
from kxds.kube.meta import Meta as Meta
from kxds.kube.meta import Requirement as Requirement

Protocol = Literal["TCP", "UDP", "SCTP"]


# --- core/v1 ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort:
    name: str
    port: int
    protocol: Protocol = "TCP"
    target_port: int | str | None = None
    node_port: int | None = None
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    meta: Meta
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    ports: tuple[ServicePort, ...] = ()
    selector: Mapping[str, str] | None = None
    cluster_ip: str | None = None
    external_name: str | None = None
    external_ips: tuple[str, ...] = ()
    load_balancer_ip: str | None = None
    load_balancer_source_ranges: tuple[str, ...] = ()
    load_balancer_ingress: tuple[str, ...] = ()
    """``status.loadBalancer.ingress[].ip``: addresses a per-node proxy can bind."""
    load_balancer_hostnames: tuple[str, ...] = ()
    """``status.loadBalancer.ingress[].hostname``: not bindable, but published in Ingress status."""
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    internal_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    health_check_node_port: int | None = None
    session_affinity: Literal["None", "ClientIP"] = "None"
    session_affinity_timeout: int | None = None
    traffic_distribution: str | None = None
    allocate_load_balancer_node_ports: bool = True
    """``spec.allocateLoadBalancerNodePorts``: whether a LoadBalancer Service gets nodePorts."""

    _index: _PortIndex | None = field(default=None, init=False, repr=False, compare=False)
    """:meth:`port_by_number` and friends, indexed on first use (a Service may have
    thousands of ports: a scan per lookup made matching them quadratic). Not part of
    the value."""

    def _ports_index(self) -> _PortIndex:
        index = self._index
        if index is None:
            index = _PortIndex(self.ports)
            object.__setattr__(self, "_index", index)  # a cache: the value stays the same
        return index

    def port_by_number(self, number: int) -> ServicePort | None:
        """The first port numbered ``number``, or None."""
        return self._ports_index().by_number.get(number)

    def port_by_name(self, name: str) -> ServicePort | None:
        """The first port named ``name``, or None."""
        return self._ports_index().by_name.get(name)

    def port_position(self, port: ServicePort) -> int:
        """Where ``port`` (one of :attr:`ports`) stands in ``spec.ports``, for field paths."""
        return self._ports_index().positions[port]


class _PortIndex:
    """A Service's ports by number, by name and by position (the first of equals wins)."""

    __slots__ = ("by_name", "by_number", "positions")

    def __init__(self, ports: tuple[ServicePort, ...]) -> None:
        self.by_number: dict[int, ServicePort] = {}
        self.by_name: dict[str, ServicePort] = {}
        self.positions: dict[ServicePort, int] = {}
        for i, p in enumerate(ports):
            self.by_number.setdefault(p.port, p)
            self.by_name.setdefault(p.name, p)
            self.positions.setdefault(p, i)


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    meta: Meta
    type: str = "Opaque"
    data: Mapping[str, bytes] = field(default_factory=dict)
    """``data`` base64-decoded, with ``stringData`` merged over it."""


MAX_CONFIG_MAP_BYTES = 64 * 1024
"""The most ConfigMap data (keys and values) kxds keeps for one ConfigMap."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigMap:
    """A ConfigMap named by an annotation (``custom-headers``, ``auth-proxy-set-headers``)."""

    meta: Meta
    data: Mapping[str, str] = field(default_factory=dict)
    """``data`` only; ``binaryData`` is never read."""
    too_large: bool = False
    """Its ``data`` was over :data:`MAX_CONFIG_MAP_BYTES` and is not kept (``data`` is
    empty): header lists are small, and other ConfigMaps must not fill memory."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace:
    meta: Meta


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerPort:
    name: str
    port: int
    protocol: Protocol = "TCP"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pod:
    """Only what NetworkPolicy needs: labels (in meta), addresses, node, named ports."""

    meta: Meta
    node_name: str | None = None
    pod_ips: tuple[str, ...] = ()
    phase: str = "Running"
    container_ports: tuple[ContainerPort, ...] = ()


# --- discovery.k8s.io/v1 ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointPort:
    name: str = ""
    port: int | None = None
    protocol: Protocol = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetRef:
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceEndpoint:
    addresses: tuple[str, ...]
    ready: bool = True
    """``conditions.ready``; an unset condition means ready (API docs)."""
    serving: bool = True
    terminating: bool = False
    node_name: str | None = None
    zone: str | None = None
    hostname: str | None = None
    target_ref: TargetRef | None = None
    hints_for_zones: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSlice:
    meta: Meta
    service_name: str
    """From the ``kubernetes.io/service-name`` label."""
    address_type: Literal["IPv4", "IPv6", "FQDN"] = "IPv4"
    ports: tuple[EndpointPort, ...] = ()
    endpoints: tuple[SliceEndpoint, ...] = ()


# --- networking.k8s.io/v1 --------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressBackend:
    """A Service backend; exactly one of ``port_number`` / ``port_name`` is set.

    Or a ``resource`` backend (``service`` empty), which kxds does not serve:
    ``resource`` then describes it (kind and name) for the diagnostic.
    """

    service: str
    port_number: int | None = None
    port_name: str | None = None
    resource: str | None = None


PathType = Literal["Exact", "Prefix", "ImplementationSpecific"]


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressPath:
    path: str
    path_type: PathType
    backend: IngressBackend


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressRule:
    host: str = ""
    """Lower-cased; ``""`` means every host."""
    paths: tuple[IngressPath, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressTLS:
    hosts: tuple[str, ...] = ()
    secret_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ingress:
    meta: Meta
    ingress_class_name: str | None = None
    default_backend: IngressBackend | None = None
    rules: tuple[IngressRule, ...] = ()
    tls: tuple[IngressTLS, ...] = ()
    load_balancer_ingress: tuple[str, ...] = ()
    """Current ``status.loadBalancer.ingress`` (IP or hostname), for the status writer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressClass:
    meta: Meta
    controller: str
    is_default: bool = False
    """The ``ingressclass.kubernetes.io/is-default-class: "true"`` annotation."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyPeer:
    """One ``from`` entry: an ipBlock, or pod/namespace selectors (either may be None)."""

    ip_block: IPBlock | None = None
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyPort:
    protocol: Protocol = "TCP"
    port: int | str | None = None
    """None means every port of the protocol."""
    end_port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRule:
    """One ingress rule. ``None`` means the field was absent (all sources / all ports)."""

    from_: tuple[PolicyPeer, ...] | None = None
    ports: tuple[PolicyPort, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkPolicy:
    meta: Meta
    pod_selector: LabelSelector
    policy_types: tuple[Literal["Ingress", "Egress"], ...]
    """As given, or defaulted as the API does: Ingress, plus Egress when egress rules exist."""
    ingress: tuple[PolicyRule, ...] = ()


Model = (Service | EndpointSlice | Ingress | IngressClass | NetworkPolicy | Secret | Namespace | Pod
         | GatewayClass | Gateway | HTTPRoute | GRPCRoute | ReferenceGrant | TLSRoute | TCPRoute
         | UDPRoute | ConfigMap | BackendTLSPolicy)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterState:
    """An immutable snapshot of every object kxds reads, plus the parse problems.

    Build it with :meth:`from_objects`; mappings are read-only views keyed by
    ``(namespace, name)``.
    """

    services: Mapping[Key, Service] = field(default_factory=dict)
    endpoint_slices: Mapping[Key, EndpointSlice] = field(default_factory=dict)
    ingresses: Mapping[Key, Ingress] = field(default_factory=dict)
    ingress_classes: Mapping[Key, IngressClass] = field(default_factory=dict)
    network_policies: Mapping[Key, NetworkPolicy] = field(default_factory=dict)
    secrets: Mapping[Key, Secret] = field(default_factory=dict)
    namespaces: Mapping[Key, Namespace] = field(default_factory=dict)
    pods: Mapping[Key, Pod] = field(default_factory=dict)
    gateway_classes: Mapping[Key, GatewayClass] = field(default_factory=dict)
    gateways: Mapping[Key, Gateway] = field(default_factory=dict)
    http_routes: Mapping[Key, HTTPRoute] = field(default_factory=dict)
    grpc_routes: Mapping[Key, GRPCRoute] = field(default_factory=dict)
    reference_grants: Mapping[Key, ReferenceGrant] = field(default_factory=dict)
    """Gateway API objects (``gateway.networking.k8s.io``); empty without the CRDs."""
    tls_routes: Mapping[Key, TLSRoute] = field(default_factory=dict)
    tcp_routes: Mapping[Key, TCPRoute] = field(default_factory=dict)
    udp_routes: Mapping[Key, UDPRoute] = field(default_factory=dict)
    """Gateway API Routes of the experimental channel (v1alpha2)."""
    config_maps: Mapping[Key, ConfigMap] = field(default_factory=dict)
    """ConfigMaps named by Ingress annotations (the API source keeps no others)."""
    backend_tls_policies: Mapping[Key, BackendTLSPolicy] = field(default_factory=dict)
    slices_by_service: Mapping[Key, tuple[EndpointSlice, ...]] = field(default_factory=dict)
    """EndpointSlices grouped by ``(namespace, service name)``, sorted by slice name."""
    problems: tuple[Diagnostic, ...] = ()
    """Objects that could not be parsed, with why; they are absent from the maps."""

    @classmethod
    def from_objects(
        cls, objects: Iterable[Model], problems: Iterable[Diagnostic] = ()
    ) -> ClusterState:
        """Index ``objects`` by kind and key. A later object with the same key wins."""
        by_type: dict[type, list[Model]] = {}
        for obj in objects:
            by_type.setdefault(type(obj), []).append(obj)
        indexed = {FIELD_OF[kind]: {m.meta.key: m for m in items}
                   for kind, items in by_type.items()}
        slices: dict[Key, list[EndpointSlice]] = {}
        # From the index, so a slice given twice is counted once (the later one).
        for s in indexed.get("endpoint_slices", {}).values():
            assert isinstance(s, EndpointSlice)
            slices.setdefault((s.meta.namespace, s.service_name), []).append(s)
        return cls(
            **{name: MappingProxyType(dict(indexed.get(name, {})))  # type: ignore[arg-type]
               for name in FIELD_OF.values()},
            slices_by_service=MappingProxyType(
                {k: slices_in_order(v) for k, v in slices.items()}),
            problems=tuple(sorted(set(problems))),
        )

    def objects(self) -> Iterable[Model]:
        """Every object, in no particular order."""
        for name in FIELD_OF.values():
            yield from getattr(self, name).values()


FIELD_OF: Mapping[type, str] = MappingProxyType({
    Service: "services", EndpointSlice: "endpoint_slices", Ingress: "ingresses",
    IngressClass: "ingress_classes", NetworkPolicy: "network_policies", Secret: "secrets",
    Namespace: "namespaces", Pod: "pods", GatewayClass: "gateway_classes", Gateway: "gateways",
    HTTPRoute: "http_routes", GRPCRoute: "grpc_routes", ReferenceGrant: "reference_grants",
    TLSRoute: "tls_routes", TCPRoute: "tcp_routes", UDPRoute: "udp_routes",
    ConfigMap: "config_maps", BackendTLSPolicy: "backend_tls_policies",
})
"""The :class:`ClusterState` field that holds each kind of object."""


def slices_in_order(slices: Iterable[EndpointSlice]) -> tuple[EndpointSlice, ...]:
    """A Service's EndpointSlices as ``slices_by_service`` holds them: by name."""
    return tuple(sorted(slices, key=lambda s: s.meta.name))
