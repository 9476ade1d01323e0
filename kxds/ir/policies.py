"""What an HTTP route does besides choosing its action: headers, CORS, limits,
authentication, error pages."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kxds.diagnostics import ObjectRef
from kxds.ir.access import ClientSet


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
    check_headers: tuple[HeaderTemplate, ...] = ()
    """Headers added to the check request (``auth-proxy-set-headers``)."""


class RequestValue(StrEnum):
    """A value of the client's request a check header may carry."""

    CLIENT_ADDRESS = "client_address"
    CLIENT_PORT = "client_port"
    AUTHORITY = "authority"
    PATH = "path"
    """The path and query, as the client sent them."""
    METHOD = "method"
    SCHEME = "scheme"


@dataclass(frozen=True, slots=True, kw_only=True)
class ValuePart:
    """A piece of a header value: ``text`` as it is, a ``value`` of the request, or
    the value of the request header ``request_header`` (empty when absent)."""

    text: str = ""
    value: RequestValue | None = None
    request_header: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderTemplate:
    """A header whose value is made per request from its ``parts``, in order."""

    name: str
    parts: tuple[ValuePart, ...] = ()


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
class RouteTracing:
    """Whether a route's requests are traced (Envoy's route ``tracing``), overriding
    the connection manager's sampling, and the name of their spans."""

    enabled: bool
    sampling_percent: float = 100.0
    """Of the route's requests, those traced (0-100) when enabled."""
    operation: str | None = None
    """The span name (Envoy's route ``decorator``); None keeps Envoy's."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutePolicy:
    """What a route does besides choosing its action: header changes, CORS, limits,
    logging. Filled from Ingress annotations and Gateway API filters."""

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
    tracing: RouteTracing | None = None
    """Tracing of this route's requests (None: as the connection manager samples)."""
