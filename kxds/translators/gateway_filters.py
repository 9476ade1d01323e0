"""HTTPRoute matches and filters -> IR (pure): the parts of a route rule beyond its path.

Semantics (Gateway API v1.4, ``HTTPRoute`` API reference):

* Matches: a header (names case-insensitive) or query parameter ``Exact`` or
  ``RegularExpression`` (RE2, the whole value), the ``method`` (a ``:method``
  header match) and ``RegularExpression`` paths (RE2, the whole path,
  case-sensitive). A regex RE2 cannot compile, or too large for Envoy (an RE2
  program over 100), is ``UnsupportedValue``.
* ``RequestHeaderModifier`` / ``ResponseHeaderModifier``: set replaces, add
  appends, remove removes (the route's request and response header changes;
  on a backend reference, that backend's weighted cluster's).
* ``RequestRedirect``: scheme, hostname, port, path (``ReplaceFullPath``, or
  ``ReplacePrefixMatch``: the matched prefix, whole path elements, replaced)
  and status code. A port equal to the scheme's well-known one is left out of
  the ``Location``, as the spec asks.
* ``URLRewrite``: hostname (the Host sent upstream) and path, as a redirect's.
* ``RequestMirror``: a copy of (``percent`` of) the requests to another backend.
* ``CORS``: Envoy's CORS filter, per route (the policy the ingress-nginx
  ``enable-cors`` annotations fill too). An allowed ``Origin`` is echoed in
  ``Access-Control-Allow-Origin``; a ``*`` in an origin's host stands for any
  number of labels (``https://*.bar.com`` allows ``https://a.b.bar.com``); an
  origin without a port is the scheme's default port (what browsers send). ``*``
  methods or headers answer a preflight with the method and headers it asks for
  (what the spec asks when credentials are allowed, and valid without). A
  request from another origin gets no CORS headers (its preflight is forwarded
  to the backend): CORS only tells browsers what they may read, it never admits
  a request the route would refuse, so nothing in it fails a Route closed.
* ``retry``: Envoy's route retry policy: ``attempts`` retries (kxds's default 2)
  on the listed ``codes``, on connection errors (refused, reset, closed, or an
  attempt past ``timeouts.backendRequest``), each on another endpoint when there
  is one; ``backoff`` is the base of Envoy's jittered exponential back-off.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import re2

from kxds.ir import (
    CorsPolicy,
    Header,
    HeaderChanges,
    HeaderMatch,
    HeaderMatchKind,
    MatchKind,
    PathMatch,
    PathRewrite,
    QueryMatch,
    Redirect,
    RetryPolicy,
    RoutePolicy,
)
from kxds.kube.gateway_models import (
    CORSFilter,
    HeaderModifier,
    PathModifier,
    RequestRedirect,
    RouteFilter,
    RouteMatch,
    RouteRetry,
    ValueMatch,
)
from kxds.translators.annotations.values import re2_problem

ROUTE_FILTERS = frozenset({"RequestHeaderModifier", "ResponseHeaderModifier",
                           "RequestRedirect", "URLRewrite", "RequestMirror", "CORS"})
"""The filter types a rule may use."""
BACKEND_FILTERS = frozenset({"RequestHeaderModifier", "ResponseHeaderModifier"})
"""The filter types a backend reference may use (its weighted cluster's header changes)."""
_WELL_KNOWN = {"http": 80, "https": 443}
_WILDCARD_LABELS = "[A-Za-z0-9.-]+"
"""What a ``*`` in a CORS origin's host stands for: any number of DNS labels."""
ENVOY_MAX_PROGRAM_SIZE = 100
"""Envoy refuses a regex whose RE2 program is larger (its runtime
``re2.max_program_size.error_level``, default 100)."""
DEFAULT_RETRIES = 2
"""Retries when ``retry.attempts`` is not given (3 attempts in all, as ingress-nginx's
``proxy-next-upstream-tries``)."""
ENVOY_BACKOFF_MS = 25
"""Envoy's retry back-off base when none is given; its cap is 10 times the base."""


def path_match(kind: str, value: str) -> PathMatch:
    """Exact is the whole path; PathPrefix matches whole path elements, a trailing slash
    ignored (the spec: equivalent to the Ingress ``Prefix`` type); RegularExpression
    the whole path."""
    if kind == "Exact":
        return PathMatch(kind=MatchKind.EXACT, path=value)
    if kind == "RegularExpression":
        return PathMatch(kind=MatchKind.FULL_REGEX, path=value)
    trimmed = value.rstrip("/")
    return (PathMatch(kind=MatchKind.PATH_PREFIX, path=trimmed) if trimmed
            else PathMatch(kind=MatchKind.PREFIX, path="/"))


def _kind(v: ValueMatch) -> HeaderMatchKind:
    return HeaderMatchKind.REGEX if v.type == "RegularExpression" else HeaderMatchKind.EXACT


def header_matches(m: RouteMatch) -> tuple[HeaderMatch, ...]:
    """The header conditions of ``m``, the method first (``:method``)."""
    method = (HeaderMatch(name=":method", value=m.method),) if m.method else ()
    return method + tuple(HeaderMatch(name=h.name.lower(), kind=_kind(h), value=h.value)
                          for h in m.headers)


def query_matches(m: RouteMatch) -> tuple[QueryMatch, ...]:
    return tuple(QueryMatch(name=q.name, kind=_kind(q), value=q.value) for q in m.query_params)


def _too_large(pattern: str | None) -> bool:
    return pattern is not None and re2.compile(pattern).programsize > ENVOY_MAX_PROGRAM_SIZE


def regex_problem(pattern: str) -> str | None:
    """Why Envoy would refuse ``pattern``: RE2 cannot compile it, or its program is
    larger than Envoy allows; None when Envoy takes it."""
    if why := re2_problem(pattern):
        return why
    if _too_large(pattern):
        return (f"too long for Envoy's regex engine (RE2 program larger than "
                f"{ENVOY_MAX_PROGRAM_SIZE})")
    return None


def match_problems(m: RouteMatch, at: str) -> list[str]:
    """Each regular expression of ``m`` Envoy would refuse, as ``field: why``."""
    out: list[str] = []
    if m.path.type == "RegularExpression" and (why := regex_problem(m.path.value)):
        out.append(f"{at}.path.value: {why}")
    for key, values in (("headers", m.headers), ("queryParams", m.query_params)):
        out += [f"{at}.{key}[{i}].value: {why}" for i, v in enumerate(values)
                if v.type == "RegularExpression" and (why := regex_problem(v.value))]
    return out


def filter_problems(filters: Iterable[RouteFilter], at: str, allowed: frozenset[str]
                    ) -> list[str]:
    """Each filter of a type kxds does not serve there, as ``field: why``; also a
    second CORS filter (a route has one CORS policy in Envoy)."""
    listed = list(filters)
    out = [f"{at}.filters[{i}]: {f.type} filters are not supported"
           for i, f in enumerate(listed) if f.type not in allowed]
    cors = [i for i, f in enumerate(listed) if f.cors is not None]
    return out + [f"{at}.filters[{i}]: a second CORS filter is not supported (Envoy has "
                  "one CORS policy per route)" for i in cors[1:]]


def header_changes(modifier: HeaderModifier | None) -> HeaderChanges | None:
    if modifier is None:
        return None
    return HeaderChanges(set=tuple(Header(name=n, value=v) for n, v in modifier.set),
                         add=tuple(Header(name=n, value=v) for n, v in modifier.add),
                         remove=modifier.remove)


def route_policy(filters: Iterable[RouteFilter]) -> RoutePolicy | None:
    """The header changes and CORS policy of a rule's filters (None: none)."""
    request = response = cors = None
    for f in filters:
        request = header_changes(f.request_headers) or request
        response = header_changes(f.response_headers) or response
        cors = cors or (cors_policy(f.cors) if f.cors is not None else None)
    if request is None and response is None and cors is None:
        return None
    return RoutePolicy(request_headers=request, response_headers=response, cors=cors)


def cors_origin(origin: str) -> tuple[str | None, str | None]:
    """(the exact origin, or an RE2 pattern for one with ``*`` in its host) of a
    ``CORSOrigin`` the parser checked; browsers send the scheme and host lower-case
    and no default port, so that is the form matched."""
    if origin == "*":
        return "*", None
    scheme, rest = origin.split("://", 1)
    host, _, port = rest.partition(":")
    scheme, host = scheme.lower(), host.lower()
    suffix = f":{int(port)}" if port and int(port) != _WELL_KNOWN.get(scheme) else ""
    if "*" not in host:
        return f"{scheme}://{host}{suffix}", None
    wild = _WILDCARD_LABELS.join(re.escape(part) for part in host.split("*"))
    return None, f"{re.escape(scheme)}://{wild}{re.escape(suffix)}"


def cors_problems(filters: Iterable[RouteFilter], at: str) -> list[tuple[str, str]]:
    """(field, why) for each wildcard origin Envoy's regex engine would refuse as too
    large: :func:`cors_policy` leaves it out (those pages get no CORS headers, the
    safe side), the rest of the filter is served."""
    return [(f"{at}.filters[{i}].cors.allowOrigins[{j}]",
             f"the wildcard origin is too long for Envoy's regex engine (RE2 program "
             f"larger than {ENVOY_MAX_PROGRAM_SIZE}); left out: it gets no CORS headers")
            for i, f in enumerate(filters) if f.cors is not None
            for j, origin in enumerate(f.cors.allow_origins)
            if _too_large(cors_origin(origin)[1])]


def cors_policy(spec: CORSFilter) -> CorsPolicy:
    """A ``CORS`` filter as the route's CORS policy (``*`` methods or headers are
    Envoy's own wildcard: it answers with what the preflight asks for); a wildcard
    origin too large for Envoy is left out (see :func:`cors_problems`)."""
    origins = [o for o in map(cors_origin, spec.allow_origins) if not _too_large(o[1])]
    return CorsPolicy(
        origins=tuple(sorted({o for o, _ in origins if o is not None})),
        origin_patterns=tuple(sorted({p for _, p in origins if p is not None})),
        methods=spec.allow_methods, headers=spec.allow_headers,
        expose_headers=spec.expose_headers, credentials=spec.allow_credentials,
        max_age_s=spec.max_age_s)


def retry_policy(retry: RouteRetry | None) -> RetryPolicy | None:
    """A rule's ``retry`` as Envoy's retry policy; None for none (or 0 attempts).

    Also on connection errors, the spec's SHOULD: a refused or reset connection,
    one closed before the answer, and an attempt past ``timeouts.backendRequest``."""
    if retry is None:
        return None
    retries = DEFAULT_RETRIES if retry.attempts is None else retry.attempts
    if retries == 0:
        return None
    return RetryPolicy(attempts=retries + 1, reset=True, status_codes=retry.codes,
                       backoff_ms=retry.backoff_ms or None)


def whole_timeout_ms(request_ms: int | None, per_try_ms: int | None,
                     retry: RetryPolicy | None) -> int | None:
    """The route's timeout: ``timeouts.request`` (it covers the retries too); without
    it, room for every attempt of ``per_try_ms`` and the back-off between them, so
    Envoy's default (15 s) never cuts a longer attempt short; else None (Envoy's)."""
    if request_ms is not None or per_try_ms is None:
        return request_ms
    if retry is None:
        return per_try_ms
    backoff_cap = 10 * (retry.backoff_ms or ENVOY_BACKOFF_MS)
    return per_try_ms * retry.attempts + backoff_cap * (retry.attempts - 1)


def path_rewrite(modifier: PathModifier, match: PathMatch) -> PathRewrite:
    """The path sent on for a ``ReplaceFullPath``, or for a ``ReplacePrefixMatch`` of the
    prefix ``match`` (whole path elements: ``/p`` -> ``/v`` makes ``/p/x`` ``/v/x``, and
    ``/v/`` makes it ``/v/x`` too; the bare prefix becomes the value)."""
    if modifier.type == "ReplaceFullPath":
        return PathRewrite(pattern="^/.*$", substitution=modifier.value)
    prefix = match.path.rstrip("/")
    if modifier.value.endswith("/") or not prefix:
        # The prefix and the slashes after it: what follows joins the value's own slash.
        return PathRewrite(pattern=f"^{re.escape(prefix)}/*",
                           substitution=modifier.value.rstrip("/") + "/")
    return PathRewrite(pattern=f"^{re.escape(prefix)}", substitution=modifier.value)


def redirect(spec: RequestRedirect, match: PathMatch, listener_scheme: str = "http",
             own_port: int | None = None) -> Redirect:
    """The redirect of a ``RequestRedirect`` filter on a route matching ``match``.

    ``listener_scheme``: how requests reach the listener (``http``, ``https``);
    ``own_port``: the listener's port when it has an Envoy listener of its own (None:
    the edge's, where port 80 and the edge port are one listener, so the request's
    own port is kept). The spec (``HTTPRequestRedirectFilter.port``): without a
    port, the redirect scheme's well-known port, else the listener's; a scheme's
    well-known port is left out of the ``Location``."""
    scheme = spec.scheme
    port = spec.port
    if port is None and own_port is not None:
        port = _WELL_KNOWN.get(scheme or "", own_port)
    # Envoy keeps the port of the request's Host without a port_redirect: on a
    # listener of its own port, keeping the request's host, the well-known port is
    # written (":80"), which the spec's conformance tests accept.
    if (port is not None and _WELL_KNOWN.get(scheme or listener_scheme) == port
            and (own_port is None or spec.hostname is not None)):
        port = None
    full = spec.path.value if spec.path and spec.path.type == "ReplaceFullPath" else None
    rewrite = (path_rewrite(spec.path, match)
               if spec.path and spec.path.type == "ReplacePrefixMatch" else None)
    return Redirect(https=scheme == "https", scheme="http" if scheme == "http" else None,
                    host=spec.hostname, port=port, status=spec.status_code, path=full,
                    rewrite=rewrite)
