"""Clusters and their endpoints: where traffic goes (Envoy CDS and EDS resources)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from kxds.diagnostics import ObjectRef


class ClusterKind(enum.StrEnum):
    """Where a cluster's hosts come from (Envoy's cluster ``type``)."""

    EDS = "eds"
    """Endpoints arrive as their own resource (from EndpointSlices)."""
    STRICT_DNS = "strict_dns"
    """Envoy resolves a name (ExternalName Services, FQDN EndpointSlices)."""


class UpstreamProtocol(enum.StrEnum):
    """What the backend speaks. Only HTTP2 changes the cluster (Envoy's
    ``HttpProtocolOptions``); TCP and UDP clusters serve layer-4 listeners."""

    HTTP1 = "http1"
    HTTP2 = "http2"
    """gRPC and h2c backends (``appProtocol: kubernetes.io/h2c``, ``grpc``)."""
    TCP = "tcp"
    UDP = "udp"


class UpstreamSource(enum.StrEnum):
    """Which source address a layer-4 listener's upstream connections and datagrams carry."""

    PROXY = "proxy"
    """The proxy's own address (the node's, for a per-node proxy): what the
    backend sees behind kube-proxy's SNAT."""
    CLIENT = "client"
    """The downstream client's address, as kube-proxy's ``externalTrafficPolicy:
    Local`` delivers it: Envoy's original-source listener filter (TCP) and the
    ``udp_proxy`` ``use_original_src_ip`` option (UDP), both with ``IP_TRANSPARENT``.
    Replies reach Envoy only where the host routes them back to it (policy
    routing on the node), so only endpoints on the proxy's own node may be used."""


class LbPolicy(enum.StrEnum):
    """Envoy's cluster ``lb_policy``: how a request or connection picks a host."""

    ROUND_ROBIN = "round_robin"
    RING_HASH = "ring_hash"
    """Consistent hashing on a ring of hosts."""
    MAGLEV = "maglev"
    """Consistent hashing with a fixed lookup table: what ``sessionAffinity: ClientIP``
    gets, with the listener hashing the client IP (``hash_source_ip``)."""
    LEAST_REQUEST = "least_request"
    """The host with fewer active requests of two picked at random (ingress-nginx's
    ``ewma`` comes closest to this)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamTLS:
    """TLS from Envoy to the backend: the cluster's ``transport_socket``
    (``UpstreamTlsContext``)."""

    sni: str | None = None
    """The server name Envoy sends, and, with a validation secret, the DNS name
    the backend's certificate must carry."""
    validation_secret: str | None = None
    """Name of a :class:`ValidationContext` secret; None means no verification."""
    alpn: tuple[str, ...] = ()
    """ALPN protocols offered to the backend (``h2`` for HTTP/2 over TLS); empty offers none."""
    dns_names: tuple[str, ...] = ()
    """With ``uris``: the subject alternative names the backend's certificate must
    carry one of (a DNS SAN equal to one of these, or a URI SAN equal to one of
    ``uris``) instead of ``sni``. Empty both: ``sni`` is the name checked."""
    uris: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierDetection:
    """Passive health checking: Envoy's cluster ``outlier_detection``. A host that
    answers ``consecutive_5xx`` 5xx (or fails to connect) in a row is ejected for
    ``base_ejection_time_ms`` times the number of its ejections so far."""

    consecutive_5xx: int = 5
    interval_ms: int = 10_000
    """How often ejections are reconsidered (and ejected hosts brought back)."""
    base_ejection_time_ms: int = 30_000
    max_ejection_percent: int = 10
    """At most this share of the hosts is ejected at once (Envoy ejects one at least)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    """Active health checking: one Envoy cluster ``health_checks`` entry that sends
    ``GET path`` to each host every ``interval_ms``; 2xx counts as healthy."""

    path: str
    interval_ms: int = 10_000
    timeout_ms: int = 1_000
    healthy_threshold: int = 1
    """Passes in a row that bring an unhealthy host back."""
    unhealthy_threshold: int = 3
    """Failures in a row that take a host out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """An Envoy ``Cluster``: a named group of upstream hosts that routes, TCP
    proxies and UDP proxies send traffic to. For Services, one per Service port
    (and per variant: ``/local`` for node-local endpoints, ``/udp``, ``/tls``).

    An EDS cluster's hosts are the :class:`LoadAssignment` of the same name, a
    resource of its own; a STRICT_DNS cluster carries its hosts inline.
    """

    name: str
    """The cluster name: what routes and listeners name, and the name of its
    load assignment (``default/web/80``)."""
    ref: ObjectRef
    """The object the cluster stems from (the Service)."""
    kind: ClusterKind = ClusterKind.EDS
    protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    dns_host: str | None = None
    """STRICT_DNS only: the name Envoy resolves."""
    dns_port: int | None = None
    """STRICT_DNS only: the port of ``dns_host``. A STRICT_DNS cluster with a load
    assignment (an FQDN EndpointSlice) takes its hosts from that instead."""
    lb_policy: LbPolicy = LbPolicy.ROUND_ROBIN
    upstream_tls: UpstreamTLS | None = None
    """TLS to the backend; None speaks plain text."""
    proxy_protocol: Literal["v1", "v2"] | None = None
    """Send a PROXY protocol header upstream so the backend sees the client IP."""
    connect_timeout_ms: int = 5000
    """Envoy's ``connect_timeout``: how long a connection to a host may take."""
    outlier_detection: OutlierDetection | None = None
    """Eject hosts that keep failing (the Service's ``kxds.io/outlier-*`` annotations)."""
    health_check: HealthCheck | None = None
    """Probe each host (the Service's ``kxds.io/health-check-*`` annotations)."""
    locality_weighted: bool = False
    """Pick a locality by its weight first, then a host in it (Envoy's
    ``locality_weighted_lb_config``): the cluster of a split whose load assignment
    has :attr:`LoadAssignment.groups`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One upstream host of a cluster: an Envoy ``LbEndpoint``."""

    address: str
    """An IP address; for a STRICT_DNS cluster, a DNS name Envoy resolves."""
    port: int
    zone: str | None = None
    """The host's zone: the Envoy locality (``locality.zone``) it is grouped in."""
    node: str | None = None
    """The Kubernetes node the host runs on. Not sent to Envoy: per-node translation
    uses it to pick node-local endpoints."""
    priority: int = 0
    """Envoy locality priority: 0 is preferred, higher ones take over when it has none."""
    draining: bool = False
    """Serving but terminating: used only because no ready endpoint remains."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadAssignment:
    """The endpoints of one cluster: an Envoy ``ClusterLoadAssignment``.

    For an EDS cluster it is a resource of its own (the EDS resource; it changes
    often, the cluster rarely), grouped into one locality per (priority, zone);
    a STRICT_DNS cluster inlines it. Empty ``endpoints`` is a cluster with no
    host: Envoy answers 503 (HTTP) or closes the connection (TCP).
    """

    cluster: str
    """The name of the :class:`Cluster` these endpoints belong to (and of the resource)."""
    ref: ObjectRef
    endpoints: tuple[Endpoint, ...] = ()
    """Sorted by (priority, zone, address, port)."""
    groups: tuple[EndpointGroup, ...] = ()
    """A split by weight instead of ``endpoints`` (for a ``locality_weighted``
    cluster): each group is one locality per priority, carrying the group's weight."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointGroup:
    """The hosts of one backend of a split by weight: an Envoy locality (per
    priority) whose ``load_balancing_weight`` is the backend's weight."""

    name: str
    """The backend's own cluster (the locality's ``sub_zone``, so it can be traced)."""
    weight: int
    """At least 1: a backend without a share is left out of the split."""
    endpoints: tuple[Endpoint, ...] = ()
