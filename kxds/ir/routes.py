"""HTTP routing: matches, actions (forward, direct response, redirect), client
certificate checks, routes, virtual hosts and route tables (Envoy RDS resources)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from kxds.diagnostics import ObjectRef
from kxds.ir.access import AccessPolicy
from kxds.ir.clusters import LbPolicy
from kxds.ir.policies import HeaderChanges, RoutePolicy


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
    backoff_ms: int | None = None
    """The base of the wait before a retry (Envoy's ``retry_back_off``: a jittered
    wait up to base x 2^n, capped at 10 x base); None: Envoy's 25 ms."""

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
