"""The gateway model: what the proxies should do, in Envoy's vocabulary.

Translators build it from a :class:`~kxds.kube.models.ClusterState`; the
:mod:`kxds.envoy` builders turn it into Envoy resources. It imports neither
Kubernetes nor protobuf types. Every node is a frozen, keyword-only, slotted
dataclass (so IRs compare by value and hash), and every node that stems from
an object carries its :class:`ObjectRef` so that Envoy resources and
diagnostics can be traced back to Kubernetes.

Collections are tuples sorted by name (or, for routes, in Envoy match order),
so the same input gives the same IR.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from kxds.diagnostics import ObjectRef

# --- clusters and endpoints ------------------------------------------------


class ClusterKind(enum.StrEnum):
    EDS = "eds"
    """Endpoints arrive as their own resource (from EndpointSlices)."""
    STRICT_DNS = "strict_dns"
    """Envoy resolves a name (ExternalName Services, FQDN EndpointSlices)."""


class UpstreamProtocol(enum.StrEnum):
    HTTP1 = "http1"
    HTTP2 = "http2"
    """gRPC and h2c backends (``appProtocol: kubernetes.io/h2c``, ``grpc``)."""
    TCP = "tcp"
    UDP = "udp"


class LbPolicy(enum.StrEnum):
    ROUND_ROBIN = "round_robin"
    RING_HASH = "ring_hash"
    """Consistent hashing, used for ``sessionAffinity: ClientIP``."""
    MAGLEV = "maglev"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamTLS:
    """TLS from Envoy to the backend."""

    sni: str | None = None
    validation_secret: str | None = None
    """Name of a :class:`ValidationContext` secret; None means no verification."""
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """One upstream cluster; for Services, one per Service port."""

    name: str
    ref: ObjectRef
    kind: ClusterKind = ClusterKind.EDS
    protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    dns_host: str | None = None
    """STRICT_DNS only: the name Envoy resolves."""
    dns_port: int | None = None
    lb_policy: LbPolicy = LbPolicy.ROUND_ROBIN
    upstream_tls: UpstreamTLS | None = None
    proxy_protocol: Literal["v1", "v2"] | None = None
    """Send a PROXY protocol header upstream so the backend sees the client IP."""
    connect_timeout_ms: int = 5000


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    address: str
    port: int
    zone: str | None = None
    node: str | None = None
    priority: int = 0
    """Envoy locality priority: 0 is preferred, higher ones take over when it has none."""
    draining: bool = False
    """Serving but terminating: used only because no ready endpoint remains."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadAssignment:
    """The endpoints of one EDS cluster (its own resource: it changes often)."""

    cluster: str
    ref: ObjectRef
    endpoints: tuple[Endpoint, ...] = ()
    """Sorted by (priority, zone, address, port)."""


# --- client IP access rules ------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IPRange:
    """A normalized CIDR, minus the CIDRs in ``except_`` (all inside it)."""

    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSet:
    """The client addresses one source of rules allows: the union of its ranges.

    Empty ``ranges`` allows nobody. ``name`` is stable and readable (it becomes
    an Envoy RBAC policy name and stat prefix), e.g. ``np/default/allow-office``.
    """

    name: str
    refs: tuple[ObjectRef, ...]
    ranges: tuple[IPRange, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessPolicy:
    """A client is allowed when it is in *every* set of ``all_of``.

    Sets in ``shadow`` are evaluated and counted but not enforced (dry-run).
    An AccessPolicy with no sets at all is never built: open means ``None``.
    """

    name: str
    all_of: tuple[ClientSet, ...] = ()
    shadow: tuple[ClientSet, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientIPConfig:
    """Where a listener takes the client address that access rules match."""

    source: Literal["peer", "xff", "proxy-protocol"] = "peer"
    xff_trusted_hops: int = 0


# --- HTTP routing ----------------------------------------------------------


class MatchKind(enum.StrEnum):
    EXACT = "exact"
    PATH_PREFIX = "path_prefix"
    """Whole path elements: ``/foo`` matches ``/foo`` and ``/foo/bar``, not ``/foobar``."""
    PREFIX = "prefix"
    """Plain string prefix; used for ``/``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PathMatch:
    kind: MatchKind
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedBackend:
    cluster: str
    weight: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    backends: tuple[WeightedBackend, ...]
    timeout_ms: int | None = None
    """None keeps Envoy's default (15 s)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectResponse:
    status: int
    body: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    https: bool = True
    port: int | None = None
    """None drops the port (default port of the scheme)."""
    status: int = 301


RouteAction = Forward | DirectResponse | Redirect


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    name: str
    ref: ObjectRef
    match: PathMatch
    action: RouteAction
    access: AccessPolicy | None = None
    wildcard_host: str | None = None
    """For a rule of a ``*.`` host: the route also requires the request host to be
    exactly one DNS label before the suffix, as Kubernetes defines ``*.foo.com``
    (Envoy's ``*.foo.com`` domain matches any number of labels)."""
    below_wildcard_host: str | None = None
    """The opposite: the route applies only to a request host with more labels
    than this ``*.`` host covers (``a.b.foo.com`` for ``*.foo.com``), which reaches
    the wildcard's virtual host only through Envoy's wider matching."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    """Host names (lower case, ``*.`` wildcards, or ``*``); the route table ignores
    a port in the Host header (``ignore_port_in_host_matching``)."""
    routes: tuple[Route, ...]
    """In Envoy match order: first match wins."""
    refs: tuple[ObjectRef, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteTable:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]


# --- listeners -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpListener:
    """Plain HTTP; its routes come from ``route_table`` over RDS."""

    name: str
    address: str
    port: int
    route_table: str
    client_ip: ClientIPConfig = ClientIPConfig()


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminatedChain:
    """TLS terminated by Envoy for ``server_names`` (empty: the default certificate)."""

    name: str
    server_names: tuple[str, ...]
    secret: str
    route_table: str
    min_tls_version: Literal["1.0", "1.1", "1.2", "1.3"] = "1.2"
    alpn: tuple[str, ...] = ("h2", "http/1.1")
    refs: tuple[ObjectRef, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PassthroughChain:
    """TLS passed through untouched to ``cluster``, chosen by SNI."""

    name: str
    server_names: tuple[str, ...]
    cluster: str
    access: AccessPolicy | None = None
    refs: tuple[ObjectRef, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsListener:
    """One port serving TLS; filter chains are selected by SNI."""

    name: str
    address: str
    port: int
    chains: tuple[TerminatedChain | PassthroughChain, ...]
    client_ip: ClientIPConfig = ClientIPConfig()


@dataclass(frozen=True, slots=True, kw_only=True)
class InternalRoute:
    """Clients from inside the cluster (``sources``) go to ``cluster`` instead.

    Per-node listeners apply a Service's ``internalTrafficPolicy`` to in-cluster
    clients and its ``externalTrafficPolicy`` to everyone else.
    """

    sources: tuple[str, ...]
    """CIDRs of in-cluster clients."""
    cluster: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpListener:
    """Layer-4 TCP proxy to one cluster (per-node NodePort, LB IP, externalIP)."""

    name: str
    ref: ObjectRef
    address: str
    port: int
    cluster: str
    access: AccessPolicy | None = None
    hash_source_ip: bool = False
    client_ip: ClientIPConfig = ClientIPConfig()
    internal: InternalRoute | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpListener:
    name: str
    ref: ObjectRef
    address: str
    port: int
    cluster: str
    hash_source_ip: bool = False
    internal: InternalRoute | None = None
    access: AccessPolicy | None = None
    """Client-IP rules: only datagrams from admitted sources are routed (shadow sets unused)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckListener:
    """kube-proxy's ``healthCheckNodePort``: 200 with local endpoints, else 503."""

    name: str
    ref: ObjectRef
    address: str
    port: int
    local_endpoints: int


Listener = HttpListener | TlsListener | TcpListener | UdpListener | HealthCheckListener


# --- secrets ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSCertificate:
    name: str
    ref: ObjectRef
    certificate_chain: str
    private_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationContext:
    name: str
    ref: ObjectRef
    trusted_ca: str


Secret = TLSCertificate | ValidationContext


# --- the whole model -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IR:
    """Everything one proxy (or group of identical proxies) should be told."""

    clusters: tuple[Cluster, ...] = ()
    load_assignments: tuple[LoadAssignment, ...] = ()
    listeners: tuple[Listener, ...] = ()
    route_tables: tuple[RouteTable, ...] = ()
    secrets: tuple[Secret, ...] = ()


def _route_clusters(table: RouteTable) -> set[str]:
    return {
        b.cluster
        for vh in table.virtual_hosts
        for r in vh.routes
        if isinstance(r.action, Forward)
        for b in r.action.backends
    }


def consistency_problems(ir: IR) -> list[str]:
    """What in ``ir`` names something ``ir`` lacks; empty when it is safe to publish."""
    clusters = {c.name for c in ir.clusters}
    assignments = {a.cluster for a in ir.load_assignments}
    tables = {t.name for t in ir.route_tables}
    secrets = {s.name for s in ir.secrets}
    problems = [
        f"cluster {c.name} has no load assignment"
        for c in ir.clusters if c.kind is ClusterKind.EDS and c.name not in assignments
    ]
    problems += [f"load assignment {a} has no cluster" for a in sorted(assignments - clusters)]
    for t in ir.route_tables:
        problems += [f"route table {t.name} names missing cluster {c}"
                     for c in sorted(_route_clusters(t) - clusters)]
    for lis in ir.listeners:
        wanted_tables: list[str] = []
        wanted_clusters: list[str] = []
        wanted_secrets: list[str] = []
        if isinstance(lis, HttpListener):
            wanted_tables.append(lis.route_table)
        elif isinstance(lis, TlsListener):
            for ch in lis.chains:
                if isinstance(ch, TerminatedChain):
                    wanted_tables.append(ch.route_table)
                    wanted_secrets.append(ch.secret)
                else:
                    wanted_clusters.append(ch.cluster)
        elif isinstance(lis, (TcpListener, UdpListener)):
            wanted_clusters.append(lis.cluster)
            if lis.internal is not None:
                wanted_clusters.append(lis.internal.cluster)
        problems += [f"listener {lis.name} names missing route table {t}"
                     for t in wanted_tables if t not in tables]
        problems += [f"listener {lis.name} names missing cluster {c}"
                     for c in wanted_clusters if c not in clusters]
        problems += [f"listener {lis.name} names missing secret {s}"
                     for s in wanted_secrets if s not in secrets]
    for c in ir.clusters:
        v = c.upstream_tls.validation_secret if c.upstream_tls else None
        if v is not None and v not in secrets:
            problems.append(f"cluster {c.name} names missing secret {v}")
    return problems
