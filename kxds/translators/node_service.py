"""One Service's part of a per-node proxy's view: its listeners, clusters and load assignments.

What a Service gets on a node, the source address its backends see and how
address conflicts are settled are described in :mod:`kxds.translators.node`,
which joins the parts of every Service into the node's view.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from kxds import ir, names
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.kube.models import ClusterState, Key, Service, ServicePort
from kxds.translators.access import service_access
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.guards import parse_ip
from kxds.translators.network_policy import PolicyIndex
from kxds.translators.node_endpoints import ServiceSlices, local_endpoint_count, port_endpoints
from kxds.translators.service_health import service_health
from kxds.translators.translation import guarded

ProxyVersion = Literal["v1", "v2"]
SourceIpMode = Literal["transparent", "proxy-protocol", "node"]

PROXY_PROTOCOL_ANNOTATION = "kxds.io/upstream-proxy-protocol"
"""``"v1"`` or ``"v2"``: send a PROXY protocol header to the Service's backends."""

SOURCE_IP_ANNOTATION = "kxds.io/source-ip"
"""Which source address the backend sees: ``transparent``, ``proxy-protocol`` or ``node``."""

_SOURCE_IP_MODES: tuple[SourceIpMode, ...] = ("transparent", "proxy-protocol", "node")

EXPOSED_TYPES = ("NodePort", "LoadBalancer")


@dataclass(frozen=True, slots=True)
class _Source:
    """A Service's choice of source address for its backends."""

    mode: SourceIpMode
    field: str
    """What chose it: the annotation, or the traffic policy (the default)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    """One place a Service port is exposed: which address and port, and how."""

    kind: str  # "nodeport", "lb" or "external"
    address: str
    port: int
    field: str


@dataclass(frozen=True, slots=True)
class Claim:
    owner: Key
    address: str


@dataclass(slots=True)
class Slot:
    """The addresses taken on one (port, protocol), indexed for overlap checks.

    A wildcard address (0.0.0.0, ::) overlaps every address of its IP family.
    """

    by_address: dict[str, Claim] = field(default_factory=dict)
    first: dict[int, Claim] = field(default_factory=dict)
    """IP version -> the first claim of that family."""
    wildcard: dict[int, Claim] = field(default_factory=dict)

    def holder(self, address: str) -> Claim | None:
        """The claim that ``address`` would overlap, if any."""
        version, unspecified = ip_kind(address)
        held = self.by_address.get(address) or self.wildcard.get(version)
        if held is None and unspecified:
            held = self.first.get(version)
        return held

    def take(self, claim: Claim) -> None:
        version, unspecified = ip_kind(claim.address)
        self.by_address[claim.address] = claim
        self.first.setdefault(version, claim)
        if unspecified:
            self.wildcard[version] = claim


@lru_cache(maxsize=4096)
def ip_kind(address: str) -> tuple[int, bool]:
    """An address's IP version and whether it is the wildcard (memoized: a node binds
    every listener to the same few addresses, and parsing was a fifth of its translation)."""
    ip = ipaddress.ip_address(address)
    return ip.version, ip.is_unspecified


@dataclass(slots=True)
class NodeBuilder:
    state: ClusterState
    config: TranslateConfig
    node: NodeInfo
    policies: PolicyIndex
    """The NetworkPolicies of ``state``, indexed once for every port's access rules."""
    clusters: dict[str, ir.Cluster] = field(default_factory=dict)
    assignments: dict[str, ir.LoadAssignment] = field(default_factory=dict)
    listeners: dict[str, ir.Listener] = field(default_factory=dict)
    claims: dict[tuple[int, str], Slot] = field(default_factory=dict)
    """(port, protocol) -> the addresses taken on it, first come first served."""
    diagnostics: set[Diagnostic] = field(default_factory=set)
    slices: dict[Key, ServiceSlices] = field(default_factory=dict)
    """Each Service's EndpointSlices, indexed once for all its ports."""

    def slices_of(self, svc: Service) -> ServiceSlices:
        found = self.slices.get(svc.meta.key)
        if found is None:
            found = self.slices[svc.meta.key] = ServiceSlices(self.state, svc)
        return found

    @property
    def bind_address(self) -> str:
        return self.node.bind_address or self.config.node_bind_address

    def problem(self, svc: Service, field_: str, reason: Reason, message: str) -> None:
        self.diagnostics.add(Diagnostic(svc.meta.ref, field_, reason, message))

    def claim(self, svc: Service, entry: _Entry, protocol: str) -> bool:
        """Take ``entry`` for ``svc``, unless an older Service holds an overlapping one."""
        mine = Claim(svc.meta.key, entry.address)
        slot = self.claims.setdefault((entry.port, protocol), Slot())
        held = slot.holder(entry.address)
        if held is None:
            slot.take(mine)
            return True
        if held.owner == mine.owner and held.address == mine.address:
            return False  # the same Service names one address twice: serve it once
        other = "this Service" if held.owner == mine.owner else \
            f"Service {held.owner[0]}/{held.owner[1]}"
        self.problem(svc, entry.field, Reason.CONFLICT,
                     f"{entry.address}:{entry.port}/{protocol} is already served "
                     f"for {other} (at {held.address})")
        return False


def add_guarded(b: NodeBuilder, svc: Service) -> None:
    """:func:`_add_service`, under the guard: a Service whose translation fails gets an
    ``InternalError`` and nothing of what it added (no listener, cluster or load
    assignment); the others are served. The addresses it claimed stay claimed, so a
    younger Service does not take its traffic over (fail closed)."""
    sizes = (len(b.clusters), len(b.assignments), len(b.listeners))

    def failed(problem: Diagnostic) -> None:
        # Entries are added in order, each under a name of its own Service: what
        # this Service added is what follows the sizes before it.
        _truncate(b.clusters, sizes[0])
        _truncate(b.assignments, sizes[1])
        _truncate(b.listeners, sizes[2])
        b.diagnostics.add(problem)

    guarded(svc.meta.ref, lambda: _add_service(b, svc), failed)


def _truncate(table: dict[str, Any], size: int) -> None:
    """Remove every entry of ``table`` after its first ``size`` (in insertion order)."""
    for name in list(table)[size:]:
        del table[name]


def _add_service(b: NodeBuilder, svc: Service) -> None:
    proxy_protocol = _proxy_protocol(b, svc)
    source = _source_ip(b, svc)
    lb_ips = _addresses(b, svc, svc.load_balancer_ingress, "status.loadBalancer.ingress")
    external_ips = [ip for ip in _addresses(b, svc, svc.external_ips, "spec.externalIPs")
                    if _external_ip_allowed(b, svc, ip)]
    if svc.type != "LoadBalancer":
        lb_ips = []
    for i, sp in enumerate(svc.ports):
        if sp.protocol == "SCTP":
            b.problem(svc, f"spec.ports[{i}].protocol", Reason.UNSUPPORTED,
                      f"port {sp.port}/SCTP is not served: Envoy does not proxy SCTP")
            continue
        entries = _entries(b, svc, i, sp, lb_ips, external_ips)
        _add_port(b, svc, sp, entries, proxy_protocol, source)
    _add_health_check(b, svc)


def _entries(b: NodeBuilder, svc: Service, i: int, sp: ServicePort,
             lb_ips: list[str], external_ips: list[str]) -> list[_Entry]:
    out: list[_Entry] = []
    if svc.type in EXPOSED_TYPES:
        field_ = f"spec.ports[{i}].nodePort"
        lo, hi = b.config.node_port_range
        if sp.node_port is None and svc.type == "LoadBalancer":
            pass  # allocateLoadBalancerNodePorts: false (valid): only the LB IPs are served
        elif sp.node_port is None:
            b.problem(svc, field_, Reason.MISSING_FIELD,
                      f"port {sp.port}/{sp.protocol} of a {svc.type} Service has no nodePort")
        elif not lo <= sp.node_port <= hi:
            b.problem(svc, field_, Reason.INVALID_VALUE,
                      f"nodePort {sp.node_port} is outside the node port range {lo}-{hi}")
        else:
            out.append(_Entry("nodeport", b.bind_address, sp.node_port, field_))
    out += [_Entry("lb", ip, sp.port, "status.loadBalancer.ingress") for ip in lb_ips]
    out += [_Entry("external", ip, sp.port, "spec.externalIPs") for ip in external_ips]
    return out


def _addresses(b: NodeBuilder, svc: Service, values: tuple[str, ...], field_: str) -> list[str]:
    """The valid IP literals of ``values`` (normalized), reporting the rest."""
    out: list[str] = []
    for i, value in enumerate(values):
        ip = parse_ip(value)
        if ip is None or value != value.strip("[]"):
            b.problem(svc, f"{field_}[{i}]", Reason.INVALID_VALUE,
                      f"{value!r} is not an IP address")
        elif str(ip) not in out:
            out.append(str(ip))
    return out


def _external_ip_allowed(b: NodeBuilder, svc: Service, address: str) -> bool:
    """externalIPs capture traffic to any address, so only allowed CIDRs are served."""
    ip = ipaddress.ip_address(address)
    for cidr in b.config.external_ip_cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        if ip.version == net.version and ip in net:
            return True
    allowed = ", ".join(b.config.external_ip_cidrs) or "none (--external-ip-cidrs is unset)"
    b.problem(svc, "spec.externalIPs", Reason.NOT_ALLOWED,
              f"externalIP {address} is outside the allowed CIDRs: {allowed}")
    return False


def _proxy_protocol(b: NodeBuilder, svc: Service) -> ProxyVersion | None:
    value = svc.meta.annotations.get(PROXY_PROTOCOL_ANNOTATION)
    if value is None:
        return None
    if value in ("v1", "v2"):
        return value  # type: ignore[return-value]
    b.problem(svc, f"metadata.annotations[{PROXY_PROTOCOL_ANNOTATION}]", Reason.INVALID_VALUE,
              f"{value!r} is not one of v1, v2; no PROXY header is sent")
    return None


def _source_ip(b: NodeBuilder, svc: Service) -> _Source:
    """The Service's ``kxds.io/source-ip``, else the default of its traffic policy."""
    value = svc.meta.annotations.get(SOURCE_IP_ANNOTATION)
    field_ = f"metadata.annotations[{SOURCE_IP_ANNOTATION}]"
    if value in _SOURCE_IP_MODES:
        return _Source(value, field_)
    local = svc.external_traffic_policy == "Local"
    if value is not None:
        b.problem(svc, field_, Reason.INVALID_VALUE,
                  f"{value!r} is not one of {', '.join(_SOURCE_IP_MODES)}; the default for "
                  f"externalTrafficPolicy {'Local' if local else 'Cluster'} is used")
    return _Source("transparent" if local else "node", "spec.externalTrafficPolicy")


def _upstream_source(b: NodeBuilder, svc: Service, sp: ServicePort, source: _Source,
                     internal: ir.InternalRoute | None) -> ir.UpstreamSource:
    """The client's address when ``source`` asks for it and it can be had here, else
    the node's, with a ``Fallback`` diagnostic saying why.

    The backend answers the client's address by its default route; the reply
    comes back to Envoy only when that route is this node, that is when the
    endpoint runs on this node (``Local``), and the node sends replies to
    Envoy's transparent sockets (:mod:`kxds.noderouting`).
    """
    if source.mode != "transparent":
        return ir.UpstreamSource.PROXY
    if svc.external_traffic_policy != "Local":
        why = ("with externalTrafficPolicy Cluster, endpoints on other nodes would answer "
               "the client directly instead of through this node")
    elif internal is not None:
        why = ("in-cluster clients (--cluster-cidrs) follow internalTrafficPolicy Cluster "
               "to endpoints on other nodes, which would answer them directly; set "
               "internalTrafficPolicy: Local")
    elif not b.node.transparent:
        why = ("the node is not set up for it (its proxy's node metadata has no "
               "source_ip_mode: transparent; see kxds bootstrap --transparent)")
    else:
        return ir.UpstreamSource.CLIENT
    b.problem(svc, source.field, Reason.FALLBACK,
              f"port {sp.port}/{sp.protocol}: the backend sees the node's address "
              f"instead of the client's: {why}")
    return ir.UpstreamSource.PROXY


def _add_port(b: NodeBuilder, svc: Service, sp: ServicePort, entries: list[_Entry],
              proxy_protocol: ProxyVersion | None, source: _Source) -> None:
    access, problems = service_access(b.state, svc, sp, b.policies)
    b.diagnostics.update(problems)
    if sp.protocol == "UDP" and access is not None and access.shadow and entries:
        # UDP rules are enforced by routing only admitted sources: nothing counts a dry run.
        b.problem(svc, f"spec.ports[{svc.port_position(sp)}]", Reason.UNSUPPORTED,
                  f"port {sp.port}/UDP: shadow-mode NetworkPolicy rules are not counted on UDP")
    entries = [e for e in entries if b.claim(svc, e, sp.protocol)]
    if not entries:
        return
    if source.mode == "proxy-protocol" and sp.protocol == "UDP":
        b.problem(svc, source.field, Reason.FALLBACK, f"port {sp.port}/UDP: the backend "
                  "sees the node's address: there is no PROXY protocol for UDP")
    elif source.mode == "proxy-protocol" and proxy_protocol is None:
        proxy_protocol = "v2"
    external_local = svc.external_traffic_policy == "Local"
    taken = _name_taken(b, svc, sp, external_local)
    if taken is not None:
        b.problem(svc, f"spec.ports[{svc.port_position(sp)}]", Reason.CONFLICT,
                  f"cluster name {taken[0]!r} is already used by {taken[1]}; "
                  f"port {sp.port}/{sp.protocol} is not served")
        return
    cluster = _cluster(b, svc, sp, proxy_protocol, local=external_local)
    internal = _internal_route(b, svc, sp, proxy_protocol, external_local)
    upstream = _upstream_source(b, svc, sp, source, internal)
    ns, name = svc.meta.namespace, svc.meta.name
    affinity = svc.session_affinity == "ClientIP"
    for e in entries:
        lname = names.node_listener(ns, name, sp.port, sp.protocol, e.kind,
                                    None if e.kind == "nodeport" else e.address)
        held = getattr(b.listeners.get(lname), "ref", svc.meta.ref)
        if held != svc.meta.ref:
            b.problem(svc, e.field, Reason.CONFLICT, f"listener name {lname!r} is already "
                      f"used by {held}; {e.address}:{e.port} is not served for this one")
            continue
        if sp.protocol == "UDP":
            b.listeners[lname] = ir.UdpListener(
                name=lname, ref=svc.meta.ref, address=e.address, port=e.port,
                cluster=cluster, hash_source_ip=affinity, internal=internal, access=access,
                upstream_source=upstream)
        else:
            b.listeners[lname] = ir.TcpListener(
                name=lname, ref=svc.meta.ref, address=e.address, port=e.port,
                cluster=cluster, access=access, hash_source_ip=affinity, internal=internal,
                upstream_source=upstream)


def _internal_route(b: NodeBuilder, svc: Service, sp: ServicePort,
                    proxy_protocol: ProxyVersion | None,
                    external_local: bool) -> ir.InternalRoute | None:
    """In-cluster clients follow ``internalTrafficPolicy``, as kube-proxy treats a pod's
    traffic to a LoadBalancer IP or externalIP like ClusterIP traffic.

    Only when ``--cluster-cidrs`` says who is in the cluster, and only when the
    two policies differ (otherwise one cluster serves both).
    """
    internal_local = svc.internal_traffic_policy == "Local"
    if not b.config.cluster_cidrs or internal_local == external_local:
        return None
    cluster = _cluster(b, svc, sp, proxy_protocol, local=internal_local)
    return ir.InternalRoute(sources=b.config.cluster_cidrs, cluster=cluster)


def _cluster(b: NodeBuilder, svc: Service, sp: ServicePort,
             proxy_protocol: ProxyVersion | None, *, local: bool) -> str:
    """A cluster of ``sp``: all endpoints, or (``local``) this node's; created once."""
    name = names.node_cluster(svc.meta.namespace, svc.meta.name, sp.port, sp.protocol,
                              local=local)
    if name in b.clusters:
        return name
    udp = sp.protocol == "UDP"
    if udp and proxy_protocol is not None:
        b.problem(svc, f"metadata.annotations[{PROXY_PROTOCOL_ANNOTATION}]",
                  Reason.UNSUPPORTED, f"port {sp.port}/UDP gets no PROXY header (TCP only)")
    health = service_health(svc)  # kxds.io/outlier-*, kxds.io/health-check-*
    b.diagnostics.update(health.diagnostics)
    b.clusters[name] = ir.Cluster(
        name=name, ref=svc.meta.ref,
        protocol=ir.UpstreamProtocol.UDP if udp else ir.UpstreamProtocol.TCP,
        lb_policy=ir.LbPolicy.MAGLEV if svc.session_affinity == "ClientIP"
        else ir.LbPolicy.ROUND_ROBIN,
        proxy_protocol=None if udp else proxy_protocol,
        outlier_detection=health.outlier_detection,
        health_check=None if udp else health.health_check,
    )
    endpoints, problems = port_endpoints(b.slices_of(svc), svc, sp, b.node, local=local)
    b.diagnostics.update(problems)
    b.assignments[name] = ir.LoadAssignment(cluster=name, ref=svc.meta.ref, endpoints=endpoints)
    return name


def _name_taken(b: NodeBuilder, svc: Service, sp: ServicePort,
                external_local: bool) -> tuple[str, ObjectRef] | None:
    """A cluster name of ``sp`` that another Service already holds, with that Service.

    Names are made distinct (no ``/`` in Kubernetes names), but a port must
    never share another Service's endpoints: older Services come first, so the
    older keeps the name and this port is not served.
    """
    locals_ = {external_local}
    if b.config.cluster_cidrs:
        locals_.add(svc.internal_traffic_policy == "Local")
    for local in sorted(locals_):
        name = names.node_cluster(svc.meta.namespace, svc.meta.name, sp.port, sp.protocol,
                                  local=local)
        held = b.clusters.get(name)
        if held is not None and held.ref != svc.meta.ref:
            return name, held.ref
    return None


def _add_health_check(b: NodeBuilder, svc: Service) -> None:
    """kube-proxy's health check server for ``externalTrafficPolicy: Local`` Services."""
    port = svc.health_check_node_port
    if svc.external_traffic_policy != "Local" or port is None:
        return
    entry = _Entry("healthcheck", b.bind_address, port, "spec.healthCheckNodePort")
    if not b.claim(svc, entry, "TCP"):
        return
    name = names.health_check_listener(svc.meta.namespace, svc.meta.name)
    b.listeners[name] = ir.HealthCheckListener(
        name=name, ref=svc.meta.ref, address=b.bind_address, port=port,
        local_endpoints=local_endpoint_count(b.slices_of(svc), b.node))
