"""ingress-nginx's external authentication (``auth-url`` and the rest) -> ExternalAuth.

Semantics follow ingress-nginx
(https://kubernetes.github.io/ingress-nginx/user-guide/nginx-configuration/annotations/#external-authentication):
every request of the Ingress's routes is first sent, without its body, to
``auth-url``; a 2xx answer admits it, 401 and 403 refuse it with that status,
anything else refuses it with 500. With ``auth-signin`` a 401 becomes a 302
to that URL carrying the original URL in ``rd`` (``auth-signin-redirect-param``).

The service's address is resolved like a backend's: a host
``<svc>.<ns>.svc[.cluster.local]`` names a Service, and the URL's port (80
without one) must be one of its ports; that Service port's cluster is used.
Any other host gets a cluster of its own resolved by DNS (``https``: TLS with
the host as SNI). Whatever kxds cannot use (a bad URL, nginx variables, a
missing Service or port) is a problem that makes every route of the Ingress
answer 503: authentication narrows access, so it fails closed.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kxds import ir, names
from kxds.diagnostics import Diagnostic, ObjectRef, Reason, show
from kxds.kube.models import ClusterState, Ingress, Key
from kxds.translators import annotations as ann
from kxds.translators.annotations import registry as r
from kxds.translators.auth_basic import allow_set_names, satisfy_any_set
from kxds.translators.auth_proxy_headers import check_headers
from kxds.translators.route_policy import IngressPolicy

HasCluster = Callable[[Key, str], bool]

_SERVICE_HOST = re.compile(
    r"^(?P<svc>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
    r"\.svc(\.cluster\.local)?\.?$")
_SIGNIN_VARIABLES = ("$escaped_request_uri", "$request_uri", "$scheme", "$host")
"""The nginx variables ``auth-signin`` may use (replaced per request)."""
_FOLLOWERS: tuple[ann.Annotation[Any], ...] = (
    r.AUTH_METHOD, r.AUTH_SIGNIN, r.AUTH_SIGNIN_REDIRECT_PARAM, r.AUTH_RESPONSE_HEADERS,
    r.AUTH_REQUEST_REDIRECT, r.AUTH_ALWAYS_SET_COOKIE, r.AUTH_PROXY_SET_HEADERS)


def external_auth(state: ClusterState, parsed: ann.Parsed, clusters: HasCluster,
                  diags: list[Diagnostic]) -> tuple[ir.ExternalAuth | None, Diagnostic | None]:
    """The Ingress's external authentication, and the problem that makes its routes
    refuse (503) when it asks for one kxds cannot use. ``diags`` gets the other
    problems (which leave the check in place)."""
    if r.AUTH_URL.name not in parsed.keys:
        diags += [parsed.problem(a, "has no effect without auth-url", Reason.UNSUPPORTED)
                  for a in _FOLLOWERS if a.name in parsed.keys]
        return None, None
    raw = parsed.get(r.AUTH_URL)
    if parsed.get(r.CANARY) is True:  # its share would be served under the main's policy
        return None, _refuse(parsed, "a canary Ingress cannot require authentication of its "
                             "share of the traffic", Reason.UNSUPPORTED,
                             "the canary is left out (fail closed)")
    if raw is None:  # present but unparsable: already reported, still refuse
        return None, _refuse(parsed, "is not usable")
    u = urllib.parse.urlsplit(raw)
    why = _url_problem(raw, u)
    if why is not None:
        return None, _refuse(parsed, f"{show(raw)} {why}")
    assert u.hostname is not None
    host = u.hostname.lower()
    port = u.port or (443 if u.scheme == "https" else 80)
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    found = _SERVICE_HOST.match(host)
    base = _options(parsed, diags, ir.ExternalAuth(
        cluster="", url=raw, host=u.netloc, path=path, tls=u.scheme == "https"))
    headers, problem = check_headers(parsed, parsed.ref.namespace, state.config_maps)
    if problem is not None:
        return None, problem
    base = dataclasses.replace(base, check_headers=headers)
    if found is None:
        cluster = names.cap(f"ext-authz/{host}/{port}" + ("/tls" if base.tls else ""))
        return dataclasses.replace(base, cluster=cluster, dns_host=host, dns_port=port), None
    if base.tls:
        return None, _refuse(parsed, f"{show(raw)}: https to an in-cluster Service is not "
                             "supported (use http, or the Service's external name)")
    key = (found.group("ns"), found.group("svc"))
    service = state.services.get(key)
    if service is None:
        return None, _refuse(parsed, f"Service {key[0]}/{key[1]} not found",
                             Reason.BACKEND_NOT_FOUND)
    sp = service.port_by_number(port)
    if sp is None or sp.protocol != "TCP":
        return None, _refuse(parsed, f"port {port} not found on Service {key[0]}/{key[1]}",
                             Reason.PORT_NOT_FOUND)
    cluster = names.service_cluster(key[0], key[1], sp.port)
    if not clusters(key, cluster):
        return None, _refuse(parsed, f"Service {key[0]}/{key[1]} cannot be reached (see its "
                             "own diagnostics)", Reason.BACKEND_NOT_FOUND)
    return dataclasses.replace(base, cluster=cluster, service=service.meta.ref), None


def _refuse(parsed: ann.Parsed, why: str, reason: Reason = Reason.INVALID_VALUE,
            outcome: str = "authentication cannot be checked, every route of this Ingress "
                           "answers 503 (fail closed)") -> Diagnostic:
    return parsed.problem(r.AUTH_URL, f"{why}: {outcome}", reason)


MAX_TEXT = 4096
"""The longest URL kxds puts in a check's headers (Envoy refuses a route table whose
header values are too long, which would stop every route's update)."""


def _unsafe(text: str) -> bool:
    """Not printable ASCII, or too long, to be sent as a header value."""
    return not (text.isascii() and text.isprintable()) or len(text) > MAX_TEXT


def _url_problem(raw: str, u: urllib.parse.SplitResult) -> str | None:
    if _unsafe(raw):
        return f"must be printable ASCII of at most {MAX_TEXT} characters"
    if "$" in raw:
        return "uses nginx variables, which kxds does not expand"
    if u.scheme not in ("http", "https") or not u.hostname or u.fragment:
        return "is not an absolute http(s) URL"
    if any(c in raw for c in " \r\n\t\x00\\") or u.username or u.password:
        return "is not a plain URL (spaces, credentials or backslashes)"
    try:
        u.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return "has an invalid port"
    return None


def _options(parsed: ann.Parsed, diags: list[Diagnostic], base: ir.ExternalAuth
             ) -> ir.ExternalAuth:
    """``base`` with the check's other options (each already parsed, reported when bad)."""
    return dataclasses.replace(
        base, method=parsed.get(r.AUTH_METHOD),
        response_headers=parsed.get(r.AUTH_RESPONSE_HEADERS) or (),
        request_redirect=_plain(parsed, r.AUTH_REQUEST_REDIRECT, diags),
        signin=_signin(parsed, diags),
        signin_param=parsed.get(r.AUTH_SIGNIN_REDIRECT_PARAM) or "rd",
        always_set_cookie=parsed.get(r.AUTH_ALWAYS_SET_COOKIE) is True)


def _plain(parsed: ann.Parsed, which: ann.Annotation[str], diags: list[Diagnostic]
           ) -> str | None:
    value = parsed.get(which)
    if value is not None and (_unsafe(value) or "%" in value or "$" in value):
        diags.append(parsed.problem(which, f"{show(value)} must be printable ASCII (no nginx "
                                    "variables, no '%'); the annotation is not applied"))
        return None
    return value


def _signin(parsed: ann.Parsed, diags: list[Diagnostic]) -> str | None:
    raw = parsed.get(r.AUTH_SIGNIN)
    if raw is None:
        return None
    rest = raw
    for var in _SIGNIN_VARIABLES:  # longest first: $request_uri is in $escaped_request_uri
        rest = rest.replace(var, "http" if var == "$scheme" else "x")
    u = urllib.parse.urlsplit(rest if "://" in rest else "http://x" + rest)
    if ("$" in rest or "%" in rest or _unsafe(raw) or any(c in raw for c in " \\")
            or u.scheme not in ("http", "https") or not (rest.startswith("/") or u.netloc)):
        diags.append(parsed.problem(
            r.AUTH_SIGNIN, f"{show(raw)} must be an http(s) URL or a path using only "
            f"{', '.join(_SIGNIN_VARIABLES)}; not applied (a 401 stays a 401)"))
        return None
    return raw


def auth_refs(auth: ir.ExternalAuth) -> tuple[ObjectRef, ...]:
    """The objects the check depends on (the Service, when it is one)."""
    return () if auth.service is None else (auth.service,)


def with_external_auth(state: ClusterState, ing: Ingress, pol: IngressPolicy,
                       clusters: HasCluster) -> tuple[IngressPolicy, Diagnostic | None]:
    """``pol`` with the Ingress's external authentication on its routes' policy, and the
    problem that makes every route refuse (503) when the check cannot be made (it is
    among the returned policy's diagnostics too). With ``satisfy: any`` the clients of
    the allow lists skip the check, as they skip basic authentication."""
    diags = list(pol.diagnostics)
    auth, refused = external_auth(state, pol.parsed, clusters, diags)
    if refused is not None:
        diags.append(refused)
    if auth is not None:
        base = pol.policy or ir.RoutePolicy()
        route_auth = dataclasses.replace(base.auth or ir.RouteAuth(), external=auth)
        relaxed = pol.relaxed
        if route_auth.basic is None:  # else basic authentication read satisfy already
            satisfy = satisfy_any_set(ing, pol.parsed, diags)
            if satisfy is not None:
                route_auth = dataclasses.replace(route_auth, satisfy_any=satisfy)
                relaxed = allow_set_names(ing)
        pol = dataclasses.replace(pol, policy=dataclasses.replace(base, auth=route_auth),
                                  relaxed=relaxed)
    return dataclasses.replace(pol, diagnostics=tuple(diags)), refused


def checks_externally(route: ir.Route) -> bool:
    """Whether ``route`` has an external authentication check (what :func:`_checks` finds)."""
    return (route.policy is not None and route.policy.auth is not None
            and route.policy.auth.external is not None)


def _checks(vhosts: Iterable[ir.VirtualHost]) -> Iterator[tuple[ir.Route, ir.ExternalAuth]]:
    for vh in vhosts:
        for route in vh.routes:
            if (route.policy is not None and route.policy.auth is not None
                    and route.policy.auth.external is not None):
                yield route, route.policy.auth.external


def auth_targets(vhosts: Iterable[ir.VirtualHost]) -> set[tuple[Key, str]]:
    """The Service clusters the routes' checks go to: built like the backends'."""
    return {((a.service.namespace, a.service.name), a.cluster)
            for _, a in _checks(vhosts) if a.service is not None}


def auth_clusters(vhosts: Iterable[ir.VirtualHost]) -> tuple[ir.Cluster, ...]:
    """The clusters of the checks that go to a host by DNS, one per name, sorted."""
    out: dict[str, ir.Cluster] = {}
    for route, a in sorted(_checks(vhosts), key=lambda c: (c[1].cluster, c[0].ref)):
        if a.service is None and a.dns_host is not None and a.cluster not in out:
            out[a.cluster] = ir.Cluster(
                name=a.cluster, ref=route.ref, kind=ir.ClusterKind.STRICT_DNS,
                dns_host=a.dns_host, dns_port=a.dns_port,
                upstream_tls=ir.UpstreamTLS(sni=a.dns_host) if a.tls else None)
    return tuple(out.values())


def passthrough_problem(parsed: ann.Parsed) -> Diagnostic | None:
    """Why a TLS passthrough Ingress asking for external authentication gets no chain:
    passthrough bypasses HTTP, so no request could be checked (fail closed)."""
    if r.AUTH_URL.name not in parsed.keys:
        return None
    return parsed.problem(r.AUTH_URL, "TLS passthrough bypasses HTTP, so requests cannot be "
                          "checked: the host's handshakes are refused (fail closed)",
                          Reason.UNSUPPORTED)
