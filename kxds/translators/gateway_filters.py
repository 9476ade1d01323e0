"""HTTPRoute matches and filters -> IR (pure): the parts of a route rule beyond its path.

Semantics (Gateway API v1.4, ``HTTPRoute`` API reference):

* Matches: a header (names case-insensitive) or query parameter ``Exact`` or
  ``RegularExpression`` (RE2, the whole value), the ``method`` (a ``:method``
  header match) and ``RegularExpression`` paths (RE2, the whole path,
  case-sensitive). A regex RE2 cannot compile is ``UnsupportedValue``.
* ``RequestHeaderModifier`` / ``ResponseHeaderModifier``: set replaces, add
  appends, remove removes (the route's request and response header changes;
  on a backend reference, that backend's weighted cluster's).
* ``RequestRedirect``: scheme, hostname, port, path (``ReplaceFullPath``, or
  ``ReplacePrefixMatch``: the matched prefix, whole path elements, replaced)
  and status code. A port equal to the scheme's well-known one is left out of
  the ``Location``, as the spec asks.
* ``URLRewrite``: hostname (the Host sent upstream) and path, as a redirect's.
* ``RequestMirror``: a copy of (``percent`` of) the requests to another backend.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from kxds.ir import (
    Header,
    HeaderChanges,
    HeaderMatch,
    HeaderMatchKind,
    MatchKind,
    PathMatch,
    PathRewrite,
    QueryMatch,
    Redirect,
    RoutePolicy,
)
from kxds.kube.gateway_models import (
    HeaderModifier,
    PathModifier,
    RequestRedirect,
    RouteFilter,
    RouteMatch,
    ValueMatch,
)
from kxds.translators.annotations.values import re2_problem

ROUTE_FILTERS = frozenset({"RequestHeaderModifier", "ResponseHeaderModifier",
                           "RequestRedirect", "URLRewrite", "RequestMirror"})
"""The filter types a rule may use."""
BACKEND_FILTERS = frozenset({"RequestHeaderModifier", "ResponseHeaderModifier"})
"""The filter types a backend reference may use (its weighted cluster's header changes)."""
_WELL_KNOWN = {"http": 80, "https": 443}


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


def match_problems(m: RouteMatch, at: str) -> list[str]:
    """Each regular expression of ``m`` RE2 cannot compile, as ``field: why``."""
    out: list[str] = []
    if m.path.type == "RegularExpression" and (why := re2_problem(m.path.value)):
        out.append(f"{at}.path.value: {why}")
    for key, values in (("headers", m.headers), ("queryParams", m.query_params)):
        out += [f"{at}.{key}[{i}].value: {why}" for i, v in enumerate(values)
                if v.type == "RegularExpression" and (why := re2_problem(v.value))]
    return out


def filter_problems(filters: Iterable[RouteFilter], at: str, allowed: frozenset[str]
                    ) -> list[str]:
    """Each filter of a type kxds does not serve there, as ``field: why``."""
    return [f"{at}.filters[{i}]: {f.type} filters are not supported"
            for i, f in enumerate(filters) if f.type not in allowed]


def header_changes(modifier: HeaderModifier | None) -> HeaderChanges | None:
    if modifier is None:
        return None
    return HeaderChanges(set=tuple(Header(name=n, value=v) for n, v in modifier.set),
                         add=tuple(Header(name=n, value=v) for n, v in modifier.add),
                         remove=modifier.remove)


def route_policy(filters: Iterable[RouteFilter]) -> RoutePolicy | None:
    """The request and response header changes of a rule's filters (None: none)."""
    request = response = None
    for f in filters:
        request = header_changes(f.request_headers) or request
        response = header_changes(f.response_headers) or response
    if request is None and response is None:
        return None
    return RoutePolicy(request_headers=request, response_headers=response)


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
