"""The gateway model: what the proxies should do, in Envoy's vocabulary.

Translators build it from a :class:`~kxds.kube.models.ClusterState`; the
:mod:`kxds.envoy` builders turn it into Envoy resources. It imports neither
Kubernetes nor protobuf types. Every node is a frozen, keyword-only, slotted
dataclass (so IRs compare by value and hash), and every node that stems from
an object carries its :class:`ObjectRef` so that Envoy resources and
diagnostics can be traced back to Kubernetes.

Collections are tuples sorted by name (or, for routes, in Envoy match order),
so the same input gives the same IR. Names are the names of the Envoy
resources (and filter chains, virtual hosts, routes) built from the nodes, and
the references between nodes are by those names: a route names its clusters, a
listener its route table. :func:`consistency_problems` checks that every name
referred to exists. :mod:`kxds.ir_yaml` writes an IR as YAML and reads it back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from kxds.diagnostics import ObjectRef

# --- clusters and endpoints ------------------------------------------------


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


# --- client IP access rules ------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IPRange:
    """A normalized CIDR, minus the CIDRs in ``except_`` (all inside it).

    In Envoy RBAC: ``remote_ip`` of ``cidr``, and-ed with the negation of the
    exceptions (NetworkPolicy ``ipBlock`` with ``except``).
    """

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
    """The objects whose rules make up the set (NetworkPolicies, a Service, an Ingress)."""
    ranges: tuple[IPRange, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessPolicy:
    """Which clients may reach a route, TLS passthrough chain, or TCP or UDP listener,
    by client IP. A client is allowed when it is in *every* set of ``all_of``.

    Sets in ``shadow`` are evaluated and counted but not enforced (dry-run).
    An AccessPolicy with no sets at all is never built: open means ``None``.
    In Envoy: an RBAC config with ``action: DENY`` and one policy per set
    ("the client is not in this set") — per-route HTTP RBAC config on routes,
    the network RBAC filter on TCP and passthrough chains, and on UDP a
    ``udp_proxy`` matcher that routes only the admitted sources
    (:mod:`kxds.envoy.rbac`).
    """

    name: str
    """Stable and readable: the network RBAC filter's stat prefix
    (``default/web/80``)."""
    all_of: tuple[ClientSet, ...] = ()
    shadow: tuple[ClientSet, ...] = ()


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
class HttpOptions:
    """What every HTTP connection manager of a listener does, whatever the route."""

    access_log: bool = True
    """One line per request on Envoy's stdout (routes may opt out)."""
    access_log_format: str | None = None
    """An Envoy format string; None writes kxds's JSON line."""
    hide_response_headers: tuple[str, ...] = ()
    """Header names (lower case) removed from every response; a name ending in ``*``
    removes every header with that prefix."""


# --- HTTP routing ----------------------------------------------------------


class MatchKind(enum.StrEnum):
    """How a route matches the request path (Envoy's ``RouteMatch`` path specifier)."""

    EXACT = "exact"
    """The whole path (Envoy ``path``)."""
    PATH_PREFIX = "path_prefix"
    """Whole path elements: ``/foo`` matches ``/foo`` and ``/foo/bar``, not ``/foobar``
    (Envoy ``path_separated_prefix``)."""
    PREFIX = "prefix"
    """Plain string prefix; used for ``/``."""
    REGEX = "regex"
    """An RE2 regular expression the whole path must match (Envoy ``safe_regex``)."""
    FULL_REGEX = "full_regex"
    """An RE2 regular expression matching the whole path as written, case-sensitive
    (Gateway API ``RegularExpression``; REGEX is ingress-nginx's case-insensitive
    prefix)."""


class HeaderMatchKind(enum.StrEnum):
    """How a :class:`HeaderMatch` tests a request header."""

    EXACT = "exact"
    REGEX = "regex"
    """RE2, matching the whole value."""
    PRESENT = "present"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMatch:
    """A condition on a request header (Envoy ``HeaderMatcher``); a cookie is tested
    as a REGEX on the ``cookie`` header."""

    name: str
    kind: HeaderMatchKind = HeaderMatchKind.EXACT
    value: str = ""
    invert: bool = False
    """Match when the condition is false (a missing header included)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryMatch:
    """A condition on a query parameter (Envoy ``QueryParameterMatcher``): EXACT or
    REGEX (RE2, the whole value)."""

    name: str
    kind: HeaderMatchKind = HeaderMatchKind.EXACT
    value: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PathMatch:
    """The path a route matches, and how."""

    kind: MatchKind
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedBackend:
    """One cluster of a route's backends, with its share of the requests."""

    cluster: str
    """The name of a :class:`Cluster`."""
    weight: int = 1
    """Relative to the weights of the route's other backends (Envoy's
    ``weighted_clusters``); unused when the route has one backend."""
    request_headers: HeaderChanges | None = None
    """Changes to requests sent to this backend only (the weighted cluster's)."""
    response_headers: HeaderChanges | None = None
    """Changes to the responses of this backend only."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Mirror:
    """A copy of the requests sent to ``cluster``, fire and forget (its answers are
    dropped)."""

    cluster: str
    """The name of a :class:`Cluster`."""
    percent: float = 100.0
    """Of the requests, 0-100."""
    host: str | None = None
    """The Host (``:authority``) of the copy; None keeps the request's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    """Send the request upstream (Envoy's ``route`` action): to one cluster, or split
    by weight between several."""

    backends: tuple[WeightedBackend, ...]
    timeout_ms: int | None = None
    """The whole request's timeout (Envoy's route ``timeout``); None keeps
    Envoy's default (15 s); 0 is none (long-lived streams)."""
    idle_timeout_ms: int | None = None
    """How long the request's stream may see no bytes either way (Envoy's route
    ``idle_timeout``); None keeps the connection manager's default (5 min)."""
    rewrite: PathRewrite | None = None
    host_rewrite: str | None = None
    """The Host (``:authority``) sent upstream (Envoy ``host_rewrite_literal``)."""
    hash_on: tuple[HashOn, ...] = ()
    """What consistent hashing hashes to pick a host (Envoy ``hash_policy``); the
    clusters need a hashing ``lb_policy``."""
    session_cookie: SessionCookie | None = None
    """Sticky sessions: the host is remembered in a cookie (Envoy's stateful session
    filter, per route)."""
    retry: RetryPolicy | None = None
    """Try another endpoint when an attempt fails (Envoy's route ``retry_policy``)."""
    mirrors: tuple[Mirror, ...] = ()
    """Copies of each request sent elsewhere, their answers dropped (Envoy's
    ``request_mirror_policies``)."""
    per_try_timeout_ms: int | None = None
    """Each attempt's timeout (Envoy's retry policy ``per_try_timeout``); None: none
    but the route's."""
    cluster_options: ClusterOptions | None = None
    """Cluster settings this route's backends need that their shared clusters lack;
    translation points the route at twin clusters that have them (and then clears
    this), so one route's choice never changes another's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterOptions:
    """Per-route upstream settings that live on an Envoy cluster."""

    lb_policy: LbPolicy = LbPolicy.ROUND_ROBIN
    connect_timeout_ms: int | None = None
    """None keeps the cluster's own (Envoy's 5 s)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When a failed attempt is tried again on another endpoint, and how often."""

    attempts: int
    """Attempts in all, the first included (at least 2)."""
    reset: bool = False
    """Also when the connection failed after the request was sent (the backend may
    have acted on it: only safe for idempotent requests)."""
    status_codes: tuple[int, ...] = ()
    """Also when the backend answered one of these statuses."""
    per_try_timeout_ms: int | None = None
    """How long each attempt may wait for its answer to begin (Envoy's
    ``per_try_timeout``; an answer once begun is never cut); None: no bound."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectResponse:
    """Envoy answers itself (``direct_response``); e.g. a 503 for a backend that
    cannot be resolved, so its traffic never falls through to a broader route."""

    status: int
    body: str = ""
    """Empty sends no body."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    """Envoy answers with a redirect to the same host and path (``redirect``)."""

    https: bool = True
    """Switch the scheme to HTTPS (``https_redirect``)."""
    port: int | None = None
    """None drops the port (default port of the scheme)."""
    status: int = 301
    """301, 302, 303, 307 or 308."""
    scheme: str | None = None
    """With ``https`` false: the scheme to switch to (``http``); None keeps the request's."""
    host: str | None = None
    """None keeps the request's host."""
    path: str | None = None
    """The whole new path (Envoy ``path_redirect``); None keeps the request's."""
    strip_query: bool = False
    rewrite: PathRewrite | None = None
    """The request's path rewritten, as for a :class:`Forward` (Envoy
    ``prefix_rewrite``, ``regex_rewrite``); exclusive with ``path``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PathRewrite:
    """The path sent upstream: the matched prefix replaced (``prefix``) or the regex
    ``pattern`` substituted (``substitution`` may name groups as ``\\1``)."""

    prefix: str | None = None
    """Envoy ``prefix_rewrite``: replaces the part of the path the route's prefix matched."""
    pattern: str | None = None
    """Envoy ``regex_rewrite``: RE2 over the whole path."""
    substitution: str = ""


class HashKind(enum.StrEnum):
    """What a :class:`HashOn` hashes."""

    CLIENT_IP = "client_ip"
    HEADER = "header"
    COOKIE = "cookie"
    PATH = "path"
    """The request's path with its query string (``:path``)."""
    QUERY_PARAMETER = "query_parameter"
    """One query parameter's value (by ``name``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HashOn:
    """One input of consistent hashing (an Envoy route ``hash_policy`` entry)."""

    kind: HashKind
    name: str = ""
    """The header or cookie name."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCookie:
    """The cookie that keeps a client on its host."""

    name: str
    path: str = "/"
    ttl_s: int | None = None
    """Max-Age; None makes a session cookie."""
    same_site: str | None = None
    """``None``, ``Lax`` or ``Strict``."""
    secure: bool = False


RouteAction = Forward | DirectResponse | Redirect
"""What a matched route does."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """A header name and value."""

    name: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderChanges:
    """Headers to set (replacing), add (appending) and remove, in that order."""

    set: tuple[Header, ...] = ()
    add: tuple[Header, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CorsPolicy:
    """Cross-origin requests a route allows (Envoy's CORS filter, per route): it
    answers preflights itself and adds the ``Access-Control-*`` headers."""

    origins: tuple[str, ...] = ()
    """Exact origins (``https://a.example``); ``*`` allows any."""
    origin_patterns: tuple[str, ...] = ()
    """RE2 patterns an origin must match as a whole (wildcard subdomains)."""
    methods: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    credentials: bool = False
    max_age_s: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """Requests (and connections) per client address; over the limit: ``status``.

    A token bucket per client address (Envoy's local rate limit with a
    descriptor keyed on the client address as the listener derives it).
    """

    tokens_per_fill: int
    """Requests allowed per ``fill_interval_ms``."""
    fill_interval_ms: int
    burst: int
    """The bucket's size: requests a client may make at once."""
    status: int = 429
    exempt: tuple[str, ...] = ()
    """CIDRs of clients never limited (normalized)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BasicAuth:
    """HTTP basic authentication of a route (Envoy's basic auth filter, per route)."""

    ref: ObjectRef
    """The Secret the users come from."""
    users: tuple[str, ...]
    """htpasswd lines (``user:{SHA}base64``), the only scheme Envoy checks; never
    empty (a route whose Secret admits nobody refuses instead)."""
    realm: str = ""
    """What ``auth-realm`` asked for; Envoy's filter always sends the request's URL
    as its realm, so it is carried for the record only."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalAuth:
    """An external HTTP authentication service asked about every request of a route
    (Envoy's ext_authz filter, per route)."""

    cluster: str
    """The :class:`Cluster` of the authentication service."""
    url: str
    """The URL the check request goes to."""
    host: str = ""
    """The Host header of the check request (the URL's host, with a port when it has one)."""
    path: str = "/"
    """The path and query the check request asks for: exactly the URL's."""
    service: ObjectRef | None = None
    """The Service whose cluster ``cluster`` is; None: a cluster of its own that
    resolves the URL's host by DNS (:attr:`dns_host`)."""
    dns_host: str | None = None
    dns_port: int | None = None
    tls: bool = False
    """The URL is ``https``: TLS to the service, SNI its host."""
    method: str | None = None
    """The check request's method; None: the request's own."""
    response_headers: tuple[str, ...] = ()
    """Headers of an accepting answer copied into the request sent to the backend."""
    request_redirect: str | None = None
    """X-Auth-Request-Redirect's value; None: the request's path and query."""
    signin: str | None = None
    """Where a client refused with 401 is redirected (302), with the original URL
    in the ``signin_param`` query parameter unless the URL has one already.
    ``$host``, ``$scheme``, ``$request_uri`` and ``$escaped_request_uri`` are
    the request's."""
    signin_param: str = "rd"
    always_set_cookie: bool = False
    """The service's Set-Cookie reaches the client also when it refuses (always on
    success)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteAuth:
    """Who must authenticate on a route, and how (Ingress ``auth-*`` annotations)."""

    basic: BasicAuth | None = None
    external: ExternalAuth | None = None
    satisfy_any: ClientSet | None = None
    """``satisfy: any``: a client in this set is admitted without authenticating
    (ingress-nginx's source ranges or authentication); None requires both."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorPages:
    """Responses with one of ``codes`` (the backend's, or Envoy's own such as 503 when
    the backend has no endpoints) are answered by the route at ``path`` on the same
    host instead: an internal redirect (Envoy's custom response filter). The client
    gets the original status with that route's body, unless it answers an error too."""

    codes: tuple[int, ...]
    path: str
    """The path of the route serving the error pages (on every host of the Ingress)."""
    headers: tuple[Header, ...] = ()
    """Added to the redirected request; ``X-Code`` is added per code."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutePolicy:
    """What a route does besides choosing its action: header changes, CORS, limits,
    logging. Filled from Ingress annotations (and, later, Gateway API filters)."""

    request_headers: HeaderChanges | None = None
    """Changes to the request before it goes upstream."""
    response_headers: HeaderChanges | None = None
    """Changes to the response before it goes to the client."""
    cors: CorsPolicy | None = None
    max_request_bytes: int | None = None
    """A larger request body is refused with 413 (Envoy's buffer filter, per route)."""
    rate_limit: RateLimit | None = None
    error_pages: ErrorPages | None = None
    auth: RouteAuth | None = None
    """Authentication the route requires (None: none)."""
    access_log: bool = True
    """Whether requests of this route are written to the access log."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One Envoy route in a virtual host: a path match, and what to do on a match.

    The first route of its virtual host that matches a request wins.
    """

    name: str
    """The Envoy route name, from the source path
    (``ingress/default/shop/rule/0/path/1``): it shows in logs and stats."""
    ref: ObjectRef
    """The object the route stems from (the Ingress)."""
    match: PathMatch
    action: RouteAction
    access: AccessPolicy | None = None
    """Client-IP rules for the route (per-route RBAC config); None is open."""
    headers: tuple[HeaderMatch, ...] = ()
    """Further conditions on request headers (canary by header or cookie)."""
    query: tuple[QueryMatch, ...] = ()
    """Further conditions on query parameters."""
    policy: RoutePolicy | None = None
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
    """An Envoy virtual host: the routes of a set of host names.

    Envoy picks the virtual host by the request's host (an exact name, then the
    longest ``*.`` suffix, then ``*``), then its first matching route.
    """

    name: str
    """Unique within its route table; the host name it serves (``shop.example.com``)."""
    domains: tuple[str, ...]
    """Host names (lower case, ``*.`` wildcards, or ``*``); the route table ignores
    a port in the Host header (``ignore_port_in_host_matching``)."""
    routes: tuple[Route, ...]
    """In Envoy match order: first match wins."""
    refs: tuple[ObjectRef, ...] = ()
    """The objects that contributed rules to the host (Ingresses)."""
    client_certificate: ClientCertificate | None = None
    """Its requests arrive through a chain checking client certificates with these
    settings: the backend is told about the certificate (request headers)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteTable:
    """An Envoy ``RouteConfiguration``, the RDS resource: the virtual hosts of one
    HTTP listener or TLS-terminating chain, which name it (``route_config_name``).
    It is a resource of its own, so a route change never touches a listener."""

    name: str
    """The name listeners and chains refer to (``http/8080``, ``https/8443``)."""
    virtual_hosts: tuple[VirtualHost, ...]
    """Sorted by name; Envoy chooses among them by domain, not by order."""


# --- listeners -------------------------------------------------------------


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
class ClientCertificate:
    """Client certificates a :class:`TerminatedChain` asks for (mutual TLS).

    In Envoy: the ``DownstreamTlsContext`` requests a certificate
    (``require_client_certificate`` when ``required``) validated against the CA
    of the :class:`ValidationContext` ``validation_secret`` over SDS.
    """

    validation_secret: str
    """The name of the :class:`ValidationContext` (the CA bundle) chains must lead to."""
    required: bool = True
    """True: a client without a valid certificate is refused at the handshake;
    False: one without a certificate is let in, one with an invalid one is refused."""
    accept_untrusted: bool = False
    """Let a certificate that does not chain to the CA in too (ingress-nginx
    ``optional_no_ca``); only with ``required`` False."""
    max_verify_depth: int = 1
    """The longest chain accepted above the client's certificate."""
    forward_certificate: bool = False
    """Tell the backend the client's certificate (URL-encoded PEM header)."""
    error_redirect: Redirect | None = None
    """Redirect a request whose certificate fails verification (or, when
    ``required``, is missing) here instead of refusing the handshake: the
    handshake then takes any certificate, and requests are routed on whether
    theirs was validated."""
    subject_pattern: str | None = None
    """An RE2 pattern that must match within the certificate's subject (RFC 2253,
    ``CN=name,O=org``); a request without such a certificate is refused (403)."""


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
    """The Service."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpListener:
    """Layer-4 UDP proxy to one cluster (per-node NodePort, LB IP, externalIP).

    In Envoy: a UDP ``Listener`` with the ``udp_proxy`` listener filter, which
    routes datagrams to clusters by source address through its matcher.
    """

    name: str
    """The listener name (``kube-system/dns/53/nodeport/udp``)."""
    ref: ObjectRef
    """The Service."""
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


# --- secrets ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSCertificate:
    """A serving certificate and its key: an Envoy SDS ``Secret`` with
    ``tls_certificate``, named by :class:`TerminatedChain` ``secret``."""

    name: str
    """The SDS secret name (``default/wild-cert``)."""
    ref: ObjectRef
    """The ``kubernetes.io/tls`` Secret."""
    certificate_chain: str
    """PEM: the certificate, then the intermediates."""
    private_key: str
    """PEM. Redacted in config dumps."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationContext:
    """CA certificates that a backend's certificate must chain to: an Envoy SDS
    ``Secret`` with ``validation_context``, named by :class:`UpstreamTLS`
    ``validation_secret``."""

    name: str
    """The SDS secret name (``default/api-ca/ca``)."""
    ref: ObjectRef
    """The Secret holding the CA bundle."""
    trusted_ca: str
    """PEM: one or more CA certificates."""


Secret = TLSCertificate | ValidationContext
"""Any secret kind: each is one Envoy SDS ``Secret`` resource named by its ``name``."""


# --- the whole model -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IR:
    """Everything one proxy (or group of identical proxies) should be told.

    Each collection becomes one xDS resource type (clusters, endpoints,
    listeners, route tables, secrets), every collection sorted by name.
    """

    clusters: tuple[Cluster, ...] = ()
    load_assignments: tuple[LoadAssignment, ...] = ()
    listeners: tuple[Listener, ...] = ()
    route_tables: tuple[RouteTable, ...] = ()
    secrets: tuple[Secret, ...] = ()


def _route_clusters(table: RouteTable) -> set[str]:
    out = {
        b.cluster
        for vh in table.virtual_hosts
        for r in vh.routes
        if isinstance(r.action, Forward)
        for b in r.action.backends
    } | {
        r.policy.auth.external.cluster
        for vh in table.virtual_hosts
        for r in vh.routes
        if r.policy is not None and r.policy.auth is not None
        and r.policy.auth.external is not None
    }
    out.update(m.cluster for vh in table.virtual_hosts for r in vh.routes
               if isinstance(r.action, Forward) for m in r.action.mirrors)
    return out


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
                    if ch.client_certificate is not None:
                        wanted_secrets.append(ch.client_certificate.validation_secret)
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
