"""Typed models of the Gateway API objects kxds reads (``gateway.networking.k8s.io``).

GatewayClass, Gateway, HTTPRoute and ReferenceGrant, keeping the fields kxds
uses and, for the fields the translation cannot serve yet, enough to name them
in a status condition (nothing a route asks for is silently dropped). Parsed
by :mod:`kxds.kube.parse_gateway`; defaults are applied there, as the CRD
schema applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kxds.kube.meta import LabelSelector, Meta

GROUP = "gateway.networking.k8s.io"
"""The Gateway API group: the default group of parent references."""

FromNamespaces = Literal["All", "Same", "Selector", "None"]
PathMatchType = Literal["Exact", "PathPrefix", "RegularExpression"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayClass:
    meta: Meta
    controller_name: str
    """``spec.controllerName``: the controller that owns the class's Gateways."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupKind:
    """A ``RouteGroupKind`` (``group`` ``""`` is the core group)."""

    group: str
    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretObjectReference:
    """A listener's ``certificateRefs`` entry (a Secret unless group/kind say otherwise)."""

    group: str = ""
    kind: str = "Secret"
    name: str
    namespace: str | None = None
    """None: the Gateway's own namespace."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerTLS:
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    certificate_refs: tuple[SecretObjectReference, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowedRoutes:
    """Which Routes may attach to a listener."""

    namespaces_from: FromNamespaces = "Same"
    selector: LabelSelector | None = None
    """With ``namespaces_from == "Selector"``: the namespaces' labels it must match."""
    kinds: tuple[GroupKind, ...] = ()
    """Empty: the kinds the listener's protocol supports."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    name: str
    port: int
    protocol: str
    """As written (HTTP, HTTPS, TLS, TCP, UDP, or a domain-prefixed custom one)."""
    hostname: str | None = None
    """Lower-cased; ``*.`` wildcards allowed; None matches every host."""
    tls: ListenerTLS | None = None
    allowed_routes: AllowedRoutes = AllowedRoutes()


@dataclass(frozen=True, slots=True, kw_only=True)
class Gateway:
    meta: Meta
    gateway_class_name: str
    listeners: tuple[Listener, ...]
    addresses: tuple[str, ...] = ()
    """``spec.addresses`` values: kxds assigns none (reported as unsupported)."""
    infrastructure: bool = False
    """Whether ``spec.infrastructure`` is set (not supported: reported)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentReference:
    group: str = GROUP
    kind: str = "Gateway"
    namespace: str | None = None
    """None: the Route's own namespace."""
    name: str
    section_name: str | None = None
    port: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PathMatch:
    type: PathMatchType = "PathPrefix"
    value: str = "/"


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueMatch:
    """A header or query parameter match: ``name`` has exactly ``value``, or a value
    the RE2 expression ``value`` matches as a whole."""

    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteMatch:
    """One ``matches`` entry: every condition must hold."""

    path: PathMatch = PathMatch()
    headers: tuple[ValueMatch, ...] = ()
    """Header names compared case-insensitively; for a name given twice the first wins."""
    query_params: tuple[ValueMatch, ...] = ()
    """For a name given twice the first wins."""
    method: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderModifier:
    """A ``RequestHeaderModifier``/``ResponseHeaderModifier``: set (replace), add
    (append), remove, each a (name, value) pair or a name."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PathModifier:
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    value: str
    """The full path, or the prefix that replaces the matched one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRedirect:
    scheme: str | None = None
    """``http`` or ``https``; None keeps the request's."""
    hostname: str | None = None
    path: PathModifier | None = None
    port: int | None = None
    status_code: int = 302


@dataclass(frozen=True, slots=True, kw_only=True)
class URLRewrite:
    hostname: str | None = None
    path: PathModifier | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestMirror:
    backend: BackendRef
    percent: float = 100.0
    """Of the requests, 0-100 (``percent`` or ``fraction``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CORSFilter:
    """A ``CORS`` filter, as written (validated as the CRD's schema and CEL rules do)."""

    allow_origins: tuple[str, ...] = ()
    """``*`` alone, or ``scheme://host[:port]`` whose host may hold ``*`` wildcards."""
    allow_methods: tuple[str, ...] = ()
    """Methods, or ``*`` alone."""
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age_s: int = 5
    """The CRD's default: 5 s."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteFilter:
    """One ``filters`` entry: ``type`` and the settings of that type (the others None)."""

    type: str
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    redirect: RequestRedirect | None = None
    rewrite: URLRewrite | None = None
    mirror: RequestMirror | None = None
    cors: CORSFilter | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRetry:
    """A rule's ``retry``: retry a backend request that failed with one of ``codes``
    (or, as the spec asks implementations to, on a connection error)."""

    codes: tuple[int, ...] = ()
    """Statuses 400-599, sorted."""
    attempts: int | None = None
    """Retries after the first request; None: kxds's default."""
    backoff_ms: int | None = None
    """The minimum wait between attempts; None: Envoy's default."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendRef:
    group: str = ""
    kind: str = "Service"
    name: str
    namespace: str | None = None
    port: int | None = None
    weight: int = 1
    filters: tuple[RouteFilter, ...] = ()
    """The backend's own filters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRule:
    name: str | None = None
    matches: tuple[RouteMatch, ...] = (RouteMatch(),)
    """Defaulted as the CRD does: one PathPrefix ``/`` match."""
    filters: tuple[RouteFilter, ...] = ()
    backend_refs: tuple[BackendRef, ...] = ()
    request_timeout_ms: int | None = None
    """``timeouts.request``; 0 disables the timeout."""
    backend_request_timeout_ms: int | None = None
    """``timeouts.backendRequest``: each attempt's timeout; 0 disables it."""
    retry: RouteRetry | None = None
    unsupported: tuple[str, ...] = ()
    """Fields set on the rule that kxds cannot serve yet (``sessionPersistence``):
    each makes the route's parents not Accepted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPRoute:
    meta: Meta
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    """Lower-cased; ``*.`` wildcards allowed."""
    rules: tuple[RouteRule, ...] = (RouteRule(),)
    status_controllers: tuple[str, ...] = ()
    """The ``controllerName`` of the entries of ``status.parents``, sorted: a controller
    that wrote there may have entries to take back once it owns no parent of the Route."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GRPCRoute:
    """A GRPCRoute, its rules already in HTTPRoute terms: a gRPC call is an HTTP/2
    POST to ``/<service>/<method>``, so each method match is a path match (Exact for
    service and method, a prefix for a service alone, a RegularExpression otherwise)."""

    meta: Meta
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[RouteRule, ...] = (RouteRule(),)
    status_controllers: tuple[str, ...] = ()
    """As :attr:`HTTPRoute.status_controllers`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantFrom:
    group: str
    kind: str
    namespace: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantTo:
    group: str
    kind: str
    name: str | None = None
    """None: every object of the kind in the grant's namespace."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferenceGrant:
    """Allows references from ``from_`` (in other namespaces) to ``to`` in its namespace."""

    meta: Meta
    from_: tuple[GrantFrom, ...]
    to: tuple[GrantTo, ...]

    def allows(self, group: str, kind: str, namespace: str, to_group: str, to_kind: str,
               name: str) -> bool:
        """Whether a ``group``/``kind`` object in ``namespace`` may refer to
        ``to_group``/``to_kind`` ``name`` in this grant's namespace."""
        return (any(f.group == group and f.kind == kind and f.namespace == namespace
                    for f in self.from_)
                and any(t.group == to_group and t.kind == to_kind
                        and (t.name is None or t.name == name) for t in self.to))


@dataclass(frozen=True, slots=True, kw_only=True)
class L4Rule:
    """A TLSRoute, TCPRoute or UDPRoute rule: backends only (no matches, no filters)."""

    name: str | None = None
    backend_refs: tuple[BackendRef, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSRoute:
    """A TLSRoute (v1alpha2): connections by SNI ``hostnames``, passed through to the
    backends still encrypted."""

    meta: Meta
    parent_refs: tuple[ParentReference, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[L4Rule, ...] = ()
    status_controllers: tuple[str, ...] = ()
    """As :attr:`HTTPRoute.status_controllers`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TCPRoute:
    """A TCPRoute (v1alpha2): every connection of its listener to the backends."""

    meta: Meta
    parent_refs: tuple[ParentReference, ...] = ()
    rules: tuple[L4Rule, ...] = ()
    hostnames: tuple[str, ...] = ()
    """Always empty (TCP has no host names); for code shared with the other Routes."""
    status_controllers: tuple[str, ...] = ()
    """As :attr:`HTTPRoute.status_controllers`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UDPRoute:
    """A UDPRoute (v1alpha2): every datagram of its listener to the backends."""

    meta: Meta
    parent_refs: tuple[ParentReference, ...] = ()
    rules: tuple[L4Rule, ...] = ()
    hostnames: tuple[str, ...] = ()
    """Always empty, as for :class:`TCPRoute`."""
    status_controllers: tuple[str, ...] = ()
    """As :attr:`HTTPRoute.status_controllers`."""


L4Route = TLSRoute | TCPRoute | UDPRoute


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyTargetRef:
    """A ``LocalPolicyTargetReferenceWithSectionName``: an object in the policy's namespace."""

    group: str
    kind: str
    name: str
    section_name: str | None = None
    """For a Service: the name of one of its ports; None means every port."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalObjectRef:
    """A ``LocalObjectReference`` (``caCertificateRefs`` entry): same namespace."""

    group: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectAltName:
    type: Literal["Hostname", "URI"]
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendTLSPolicy:
    """A BackendTLSPolicy (v1): how the gateway connects over TLS to the targeted Services."""

    meta: Meta
    target_refs: tuple[PolicyTargetRef, ...]
    hostname: str
    """``validation.hostname``: the SNI sent, and the name the certificate must carry."""
    ca_refs: tuple[LocalObjectRef, ...] = ()
    well_known_cas: str | None = None
    """``validation.wellKnownCACertificates`` (``System``); exclusive with ``ca_refs``."""
    subject_alt_names: tuple[SubjectAltName, ...] = ()
    options: tuple[str, ...] = ()
    """The keys of ``spec.options`` (implementation-specific; kxds defines none)."""


GatewayModel = (GatewayClass | Gateway | HTTPRoute | GRPCRoute | ReferenceGrant | TLSRoute
                | TCPRoute | UDPRoute | BackendTLSPolicy)
