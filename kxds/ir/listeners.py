"""Listeners: HTTP, TLS (terminated and passed through), TCP, UDP and health checks
(Envoy LDS resources)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kxds.diagnostics import ObjectRef
from kxds.ir.access import AccessPolicy
from kxds.ir.clusters import UpstreamSource
from kxds.ir.routes import ClientCertificate


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientIPConfig:
    """Where a listener takes the client address that access rules match."""

    source: Literal["peer", "xff", "proxy-protocol"] = "peer"
    """``peer``: the socket's peer address. ``xff``: the address X-Forwarded-For
    names ``xff_trusted_hops`` proxies back (Envoy's ``xff_num_trusted_hops``).
    ``proxy-protocol``: the source in a PROXY protocol header, which the listener
    then requires (Envoy's ``proxy_protocol`` listener filter)."""
    xff_trusted_hops: int = 0
    """With ``xff``: how many proxies in front of Envoy append to X-Forwarded-For."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracing:
    """Request tracing on every HTTP connection manager: spans sent over OTLP/gRPC to
    the collector cluster (Envoy's OpenTelemetry tracer)."""

    collector_cluster: str
    """The name of the :class:`Cluster` of the collector."""
    service_name: str = "kxds"
    """The ``service.name`` of the spans."""
    sampling_percent: float = 0.0
    """Of the requests of routes without their own tracing, those traced (0-100)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpOptions:
    """What every HTTP connection manager of a listener does, whatever the route."""

    access_log: bool = True
    """One line per request on Envoy's stdout (routes may opt out)."""
    access_log_format: str | None = None
    """An Envoy format string; None writes kxds's JSON line."""
    hide_response_headers: tuple[str, ...] = ()
    """Header names (lower case) removed from every response; a name ending in ``*``
    removes every header with that prefix."""
    tracing: Tracing | None = None
    """Trace requests (None: no tracer)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpListener:
    """Plain HTTP; its routes come from ``route_table`` over RDS.

    In Envoy: a ``Listener`` with one filter chain, an HTTP connection manager
    with the RBAC filter (access rules) and the router.
    """

    name: str
    """The listener name (``http/8080``), also its stat prefix."""
    address: str
    """The address bound (``0.0.0.0`` for all)."""
    port: int
    route_table: str
    """The name of the :class:`RouteTable` the listener routes with."""
    client_ip: ClientIPConfig = ClientIPConfig()
    http: HttpOptions = HttpOptions()


@dataclass(frozen=True, slots=True, kw_only=True)
class TerminatedChain:
    """TLS terminated by Envoy for ``server_names`` (empty: the default certificate).

    In Envoy: a filter chain of a :class:`TlsListener` matched by SNI, with a
    ``DownstreamTlsContext`` and the same HTTP connection manager as an
    :class:`HttpListener`.
    """

    name: str
    """The filter chain name, unique in its listener; also the stat prefix."""
    server_names: tuple[str, ...]
    """SNI names the chain serves (``filter_chain_match.server_names``; ``*.``
    wildcards allowed); empty: clients whose SNI no other chain names."""
    secret: str
    """The name of the :class:`TLSCertificate` served, fetched over SDS."""
    route_table: str
    """The name of the :class:`RouteTable` for the decrypted HTTP requests."""
    min_tls_version: Literal["1.0", "1.1", "1.2", "1.3"] = "1.2"
    alpn: tuple[str, ...] = ("h2", "http/1.1")
    """ALPN protocols offered to clients, in order of preference."""
    refs: tuple[ObjectRef, ...] = ()
    """The objects the chain stems from (Ingresses, the TLS Secret)."""
    client_certificate: ClientCertificate | None = None
    """Mutual TLS: the client certificates the chain asks for; None asks for none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterWeight:
    """One cluster of a layer-4 split by weight (Envoy ``tcp_proxy`` ``weighted_clusters``)."""

    cluster: str
    weight: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PassthroughChain:
    """TLS passed through untouched to ``cluster``, chosen by SNI.

    In Envoy: a filter chain of a :class:`TlsListener` with ``tcp_proxy`` (after
    the network RBAC filter when there is an access policy); the backend
    terminates TLS itself.
    """

    name: str
    """The filter chain name, unique in its listener."""
    server_names: tuple[str, ...]
    """SNI names the chain serves."""
    cluster: str
    """The name of the :class:`Cluster` the encrypted stream goes to."""
    access: AccessPolicy | None = None
    """Client-IP rules for the connection; None is open."""
    refs: tuple[ObjectRef, ...] = ()
    weighted: tuple[ClusterWeight, ...] = ()
    """Two or more: connections split among these by weight (``cluster`` is the first);
    empty: every connection to ``cluster``."""
    secret: str | None = None
    """With a :class:`TLSCertificate` name: TLS is terminated here with that certificate
    (a Gateway ``TLS`` listener in ``Terminate`` mode) and the decrypted stream goes to
    the cluster; None: the stream passes through still encrypted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsListener:
    """One port serving TLS; filter chains are selected by SNI.

    In Envoy: a ``Listener`` with the ``tls_inspector`` listener filter (which
    reads the SNI) and one filter chain per chain. A client whose SNI no chain
    serves, and no default chain exists for, is disconnected.
    """

    name: str
    """The listener name (``https/8443``)."""
    address: str
    port: int
    chains: tuple[TerminatedChain | PassthroughChain, ...]
    """The filter chains, in order; no two serve the same SNI name."""
    client_ip: ClientIPConfig = ClientIPConfig()
    http: HttpOptions = HttpOptions()
    """For the terminated chains' connection managers."""


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
    """Layer-4 TCP proxy to one cluster (per-node NodePort, LB IP, externalIP).

    In Envoy: a ``Listener`` whose filter chain is ``tcp_proxy`` (after the
    network RBAC filter when there is an access policy).
    """

    name: str
    """The listener name, from the Service port and the address kind
    (``default/web/80/nodeport/tcp``, ``default/web/80/lb/192.0.2.10/tcp``)."""
    ref: ObjectRef
    """The Service (a per-node listener), or the TCPRoute or UDPRoute (a Gateway's)."""
    address: str
    """The address bound: ``0.0.0.0`` for a NodePort (or the node's bind address);
    a LoadBalancer IP or externalIP is bound with ``freebind``, since it need not
    be on an interface of the node."""
    port: int
    cluster: str
    """The name of the :class:`Cluster` connections go to."""
    access: AccessPolicy | None = None
    """Client-IP rules, matched against the connection's peer; None is open."""
    hash_source_ip: bool = False
    """Hash the client IP to pick the host (ClientIP session affinity; needs a
    hashing ``lb_policy`` on the cluster)."""
    client_ip: ClientIPConfig = ClientIPConfig()
    """Carried beside the other listener kinds; the TCP builder does not read it:
    a per-node proxy is the client's first hop, so the peer is the client."""
    internal: InternalRoute | None = None
    upstream_source: UpstreamSource = UpstreamSource.PROXY
    """The source address of upstream connections (every filter chain's)."""
    weighted: tuple[ClusterWeight, ...] = ()
    """As :attr:`PassthroughChain.weighted` (for the chain without an internal route)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpListener:
    """Layer-4 UDP proxy to one cluster (per-node NodePort, LB IP, externalIP).

    In Envoy: a UDP ``Listener`` with the ``udp_proxy`` listener filter, which
    routes datagrams to clusters by source address through its matcher.
    """

    name: str
    """The listener name (``kube-system/dns/53/nodeport/udp``)."""
    ref: ObjectRef
    """The Service (a per-node listener), or the TCPRoute or UDPRoute (a Gateway's)."""
    address: str
    """The address bound, as for :class:`TcpListener`."""
    port: int
    cluster: str
    """The name of the :class:`Cluster` datagrams go to."""
    hash_source_ip: bool = False
    """Hash the client IP to pick the host (ClientIP session affinity)."""
    internal: InternalRoute | None = None
    access: AccessPolicy | None = None
    """Client-IP rules: only datagrams from admitted sources are routed (shadow sets unused)."""
    upstream_source: UpstreamSource = UpstreamSource.PROXY
    """The source address of datagrams sent upstream (every route's)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckListener:
    """kube-proxy's ``healthCheckNodePort``: 200 with local endpoints, else 503.

    In Envoy: an HTTP listener whose answer comes from a route table of the same
    name, built from the listener (not listed in the IR's route tables), so a
    change of the count updates that route table and never the listener.
    """

    name: str
    """The listener name (``shop/web/healthcheck``), also its route table's name."""
    ref: ObjectRef
    """The Service; its namespace and name appear in the answer's JSON body."""
    address: str
    port: int
    local_endpoints: int
    """How many of the Service's endpoints run on this node."""


Listener = HttpListener | TlsListener | TcpListener | UdpListener | HealthCheckListener
"""Any listener kind: each is one Envoy ``Listener`` (LDS resource) named by its ``name``."""
