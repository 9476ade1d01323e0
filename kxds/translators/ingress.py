"""Ingresses of our class -> one HTTP listener and its route table.

Semantics follow the Kubernetes Ingress documentation
(https://kubernetes.io/docs/concepts/services-networking/ingress/):

* Rules of every Ingress are merged per host; a host is case-insensitive and a
  port in the ``Host`` header is ignored. ``*.foo.com`` matches exactly one
  label (``bar.foo.com``, not ``foo.com`` nor ``baz.bar.foo.com``).
* ``Prefix`` matches whole path elements (``/foo`` matches ``/foo`` and
  ``/foo/bar``, not ``/foobar``); a trailing slash in the rule is ignored.
  ``ImplementationSpecific`` is treated as ``Prefix``.
* When several paths match, the longest wins, and an ``Exact`` path wins over
  a ``Prefix`` path of the same length ("Multiple matches" in the docs).
* A request that matches no rule goes to the ``defaultBackend``; without one,
  Envoy answers 404 (no virtual host or no route matched). The gateway has one
  default backend: the oldest Ingress's (the others get a ``Conflict``). It
  ends every virtual host, so a host whose paths do not match falls to it.
* Rules without a host serve the hosts that no rule names (virtual host
  ``*``); a host with rules of its own is served by those (as ingress-nginx
  and Contour do), and so is a one-label match of a ``*.`` host: a path its
  rules lack goes to the default backend, not to the rules without a host.
* The same host, path and path type in two Ingresses: the oldest Ingress
  (``creationTimestamp``, then namespace/name) keeps it; the other gets a
  ``Conflict`` diagnostic.
* A backend that cannot be resolved keeps its route as a direct 503, so its
  traffic never falls through to a shorter prefix. So does a ``resource``
  backend, which kxds does not serve (``Unsupported``): the Ingress's other
  paths still serve.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass, replace
from typing import Any

from kxds import names
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.ir import (
    AccessPolicy,
    DirectResponse,
    Forward,
    HttpListener,
    MatchKind,
    PathMatch,
    Route,
    RouteAction,
    RouteTable,
    WeightedBackend,
)
from kxds.kube.models import ClusterState, Ingress, IngressBackend, IngressPath, Key
from kxds.translators.access import route_access
from kxds.translators.annotations import Annotation
from kxds.translators.annotations.registry import APP_ROOT, DEFAULT_BACKEND, MIRROR_TARGET
from kxds.translators.auth_external import with_external_auth
from kxds.translators.canary import CanaryPath, CanaryRule, canary_rule
from kxds.translators.config import TranslateConfig
from kxds.translators.error_pages import (
    ErrorBackend,
    error_backend,
    error_route,
    with_error_pages,
)
from kxds.translators.mirror import MirrorPlan, mirror_plan
from kxds.translators.network_policy import PolicyIndex
from kxds.translators.route_policy import (
    IngressPolicy,
    app_root_route,
    ingress_policy,
    regex_problem,
)

CATCH_ALL = ""
"""The host of rules without ``host``: their virtual host has domain ``*``."""

UNAVAILABLE = DirectResponse(status=503, body="backend not found")

# Sequences the API server rejects in Exact and Prefix paths (Ingress
# validation); after Envoy's path normalization such a rule could never match.
_BAD_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F", "?", "#")
_SUSPECT = re.compile(r"//|/\.|%2[fF]|[?#]")
"""Matches every path with one of :data:`_BAD_SEQUENCES` or ending in ``/.`` or ``/..``."""


def http_listener(config: TranslateConfig, port: int | None = None) -> HttpListener:
    """The plain-HTTP listener on ``port`` (None: the edge's, ``--http-port``); its
    route table has the same name."""
    port = config.http_port if port is None else port
    name = names.http_listener(port)
    return HttpListener(name=name, address=config.listen_address, port=port,
                        route_table=name, client_ip=config.client_ip, http=config.http)


HasCluster = Callable[[Key, str], bool]
"""Whether the Service ``key`` has the cluster named so (a backend without one is
unresolvable)."""

Target = tuple[Key, str]
"""A Service (by key) and the name of one of its clusters that a route forwards to."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One path (or the default backend) of an Ingress, before conflicts are settled."""

    host: str
    match: PathMatch
    field_path: str
    described: str
    """The path as the conflict message names it: type and value as written."""
    route: Route
    diagnostics: tuple[Diagnostic, ...]
    """Problems of its backend: reported only when the path is not a conflict."""
    target: Target | None = None
    """The Service cluster it forwards to (None: it answers directly)."""


@dataclass(frozen=True, slots=True)
class IngressRoutes:
    """Everything one Ingress contributes, independent of the other Ingresses."""

    ref: ObjectRef
    paths: tuple[Candidate, ...]
    default: Candidate | None
    diagnostics: tuple[Diagnostic, ...]
    """Problems of the Ingress itself (unusable paths): always reported."""
    canary: tuple[CanaryRule, tuple[CanaryPath, ...]] | None = None
    """A canary Ingress: its rule and paths, added to the main Ingresses' routes
    (it then has no ``paths`` of its own)."""
    mirror: MirrorPlan | None = None
    """Where copies of its requests go (``mirror-target``)."""


def ingress_routes(state: ClusterState, ing: Ingress, clusters: HasCluster,
                   policies: PolicyIndex | None, limit_status: int = 429,
                   ignore_snippets: bool = False) -> IngressRoutes:
    """The route of each usable path of ``ing`` and of its default backend.

    Its annotations (:mod:`kxds.translators.route_policy`) are applied to every
    route; a canary Ingress's paths are kept apart (:mod:`kxds.translators.canary`).
    An annotation that narrows who may reach the routes and that kxds cannot
    honour (authentication other than basic, basic authentication whose Secret
    is unusable, a WAF, an nginx snippet) makes every route of the Ingress
    answer 503 (:func:`failed_routes`): fail closed, never open.
    """
    pol = ingress_policy(ing, limit_status, state.secrets, state.config_maps)
    refused = narrowing_problem(ing, pol.parsed.narrowing, ignore_snippets) or pol.refused
    if refused is None:  # the check must be possible, or the routes refuse
        pol, refused = with_external_auth(state, ing, pol, clusters)
    if refused is not None:
        return _refused_routes(ing, pol, refused)
    own: list[Diagnostic] = list(pol.diagnostics)
    plan = mirror_plan(state, pol.parsed, clusters, own, policies)
    if plan is not None:
        pol = replace(pol, forward=replace(pol.forward, mirrors=(plan.mirror,)))
    errors = _error_backend(state, ing, pol, own)
    paths = _path_routes(state, ing, pol, clusters, policies, errors, own)
    paths += _app_roots(pol, paths)
    if errors is not None:
        paths += _error_routes(state, ing, pol, errors, paths, clusters, policies)
    rule_of = canary_rule(pol.parsed, own)
    if rule_of is not None:
        return _canary_routes(ing, pol, rule_of, paths, own, mirrored=plan is not None)
    return IngressRoutes(ref=ing.meta.ref, paths=tuple(paths),
                         default=_default_route(state, ing, pol, clusters, policies),
                         diagnostics=tuple(own), mirror=plan)


def _refused_routes(ing: Ingress, pol: IngressPolicy, refused: Diagnostic) -> IngressRoutes:
    """Every route of ``ing`` answers 503 (a canary Ingress has none): an annotation
    narrows access in a way kxds cannot honour."""
    # The annotation's own diagnostic (among the policy's) says so already, but
    # for authentication that cannot be honoured (its refusal says why).
    own_diags = (*pol.diagnostics, *((refused,) if refused is pol.refused else ()))
    if canary_rule(pol.parsed, []) is not None:  # a canary only adds traffic: drop it
        return IngressRoutes(ref=ing.meta.ref, paths=(), default=None, diagnostics=own_diags)
    return replace(failed_routes(ing, refused), diagnostics=own_diags)


def _path_routes(state: ClusterState, ing: Ingress, pol: IngressPolicy, clusters: HasCluster,
                 policies: PolicyIndex | None, errors: ErrorBackend | None,
                 own: list[Diagnostic]) -> list[Candidate]:
    """The route of each usable path of the rules of ``ing``."""
    ref = ing.meta.ref
    paths: list[Candidate] = []
    for i, rule in enumerate(ing.rules):
        for j, path in enumerate(rule.paths):
            field_path = f"spec.rules[{i}].http.paths[{j}]"
            match = _match(ing, pol, path, field_path, own)
            if match is None:
                continue
            diags: list[Diagnostic] = []
            action, access, target = _backend_action(
                state, ing, path.backend, f"{field_path}.backend", clusters, diags, policies)
            route = pol.apply(Route(
                name=names.ingress_route(ref.namespace, ref.name, i, j), ref=ref,
                match=match, action=action, access=access,
                wildcard_host=rule.host if rule.host.startswith("*.") else None))
            if errors is not None:
                route = with_error_pages(route, ing, errors, path)
            paths.append(Candidate(rule.host, match, field_path,
                                   f"{path.path_type} {path.path!r}", route, tuple(diags),
                                   target))
    return paths


def _canary_routes(ing: Ingress, pol: IngressPolicy, rule_of: CanaryRule,
                   paths: list[Candidate], own: list[Diagnostic],
                   *, mirrored: bool) -> IngressRoutes:
    """A canary Ingress's paths, kept apart for the main Ingress's routes to split to."""
    if mirrored:
        own.append(pol.parsed.problem(MIRROR_TARGET, "not applied on a canary Ingress: its "
                                      "requests are mirrored as the main Ingress says",
                                      Reason.UNSUPPORTED))
    canary = tuple(CanaryPath(c.host, c.route, c.field_path, c.diagnostics, c.target)
                   for c in paths)
    return IngressRoutes(ref=ing.meta.ref, paths=(), default=None, diagnostics=tuple(own),
                         canary=(rule_of, canary))


def _default_route(state: ClusterState, ing: Ingress, pol: IngressPolicy,
                   clusters: HasCluster, policies: PolicyIndex | None) -> Candidate | None:
    """The route of ``spec.defaultBackend``, if any."""
    if ing.default_backend is None:
        return None
    ref = ing.meta.ref
    diags: list[Diagnostic] = []
    action, access, target = _backend_action(
        state, ing, ing.default_backend, "spec.defaultBackend", clusters, diags, policies)
    match = PathMatch(kind=MatchKind.PREFIX, path="/")
    return Candidate(CATCH_ALL, match, "spec.defaultBackend", "", pol.apply_default(Route(
        name=names.ingress_default_route(ref.namespace, ref.name), ref=ref, match=match,
        action=action, access=access)), tuple(diags), target)


SNIPPETS = frozenset({"configuration-snippet", "server-snippet", "auth-snippet",
                      "modsecurity-snippet", "stream-snippet"})
"""Annotations carrying nginx configuration, which kxds never interprets."""


def narrowing_problem(ing: Ingress, narrowing: Iterable[str],
                      ignore_snippets: bool) -> Diagnostic | None:
    """Why ``ing``'s routes must refuse traffic, if they must: the first annotation that
    narrows access and that kxds cannot honour (``--ignore-snippets`` lets snippets pass)."""
    for key in sorted(narrowing):
        short = key.rsplit("/", 1)[-1]
        if ignore_snippets and short in SNIPPETS:
            continue
        return Diagnostic(ing.meta.ref, f"metadata.annotations[{key}]", Reason.UNSUPPORTED,
                          "it may restrict who reaches these routes and kxds cannot honour "
                          "it: every route of this Ingress answers 503 (fail closed)"
                          + (" unless kxds runs with --ignore-snippets"
                             if short in SNIPPETS else ""))
    return None


def failed_routes(ing: Ingress, problem: Diagnostic) -> IngressRoutes:
    """What an Ingress whose translation failed contributes: every path and its default
    backend answering 503, reported by ``problem``.

    Fail closed: leaving the Ingress out would let its paths fall through to
    another Ingress's shorter prefix on the same host (or to the default
    backend); like an unresolvable backend, they answer 503 instead. The
    matches are made as plainly as possible, so that this cannot fail too.
    """
    ref = ing.meta.ref
    paths: list[Candidate] = []
    for i, rule in enumerate(ing.rules):
        for j, path in enumerate(rule.paths):
            match = _plain_match(path)
            route = Route(name=names.ingress_route(ref.namespace, ref.name, i, j), ref=ref,
                          match=match, action=UNAVAILABLE,
                          wildcard_host=rule.host if rule.host.startswith("*.") else None)
            paths.append(Candidate(rule.host, match, f"spec.rules[{i}].http.paths[{j}]",
                                    f"{path.path_type} {path.path!r}", route, ()))
    default = None
    if ing.default_backend is not None:
        match = PathMatch(kind=MatchKind.PREFIX, path="/")
        default = Candidate(CATCH_ALL, match, "spec.defaultBackend", "", Route(
            name=names.ingress_default_route(ref.namespace, ref.name), ref=ref, match=match,
            action=UNAVAILABLE), ())
    return IngressRoutes(ref=ref, paths=tuple(paths), default=default, diagnostics=(problem,))


def _plain_match(path: IngressPath) -> PathMatch:
    if path.path_type == "Exact":
        return PathMatch(kind=MatchKind.EXACT, path=path.path)
    trimmed = path.path.rstrip("/")
    return (PathMatch(kind=MatchKind.PATH_PREFIX, path=trimmed) if trimmed
            else PathMatch(kind=MatchKind.PREFIX, path="/"))


def unavailable_without(table: RouteTable, clusters: Set[str]) -> RouteTable:
    """``table`` with every route forwarding to a cluster not in ``clusters`` answering 503.

    For a Service whose translation failed (it has no clusters): its routes
    answer like any unresolvable backend's, never fall through.
    """
    def fixed(r: Route) -> Route:
        if isinstance(r.action, Forward) and any(
                b.cluster not in clusters for b in r.action.backends):
            return replace(r, action=UNAVAILABLE, access=None)
        policy = r.policy
        auth = policy.auth if policy is not None else None
        if (policy is not None and auth is not None and auth.external is not None
                and auth.external.cluster not in clusters):
            # The check cannot be made: refuse, and name no missing cluster.
            return replace(r, action=UNAVAILABLE, access=None, policy=replace(
                policy, auth=replace(auth, external=None)))
        if isinstance(r.action, Forward) and any(
                m.cluster not in clusters for m in r.action.mirrors):
            return replace(r, action=replace(r.action, mirrors=tuple(
                m for m in r.action.mirrors if m.cluster in clusters)))
        return r

    return replace(table, virtual_hosts=tuple(
        replace(vh, routes=tuple(fixed(r) for r in vh.routes)) for vh in table.virtual_hosts))


def _match(ing: Ingress, pol: IngressPolicy, path: IngressPath, field_path: str,
           diagnostics: list[Diagnostic]) -> PathMatch | None:
    """The path's match: a regex when the Ingress's annotations make paths regexes."""
    if pol.regex_paths and path.path_type != "Exact":
        problem = regex_problem(ing, field_path, path.path)
        if problem is not None:
            diagnostics.append(problem)
            return None
        return PathMatch(kind=MatchKind.REGEX, path=path.path)
    return path_match(path, ing.meta.ref, field_path, diagnostics)


def _error_backend(state: ClusterState, ing: Ingress, pol: IngressPolicy,
                   own: list[Diagnostic]) -> ErrorBackend | None:
    """``custom-http-errors``/``default-backend``, for an Ingress that is not a canary
    (a canary's paths join the main Ingress's routes, whose errors are its own)."""
    if canary_rule(pol.parsed, []) is not None:
        return None
    problems: list[tuple[Annotation[Any], str]] = []
    errors = error_backend(state, ing, pol.parsed, problems)
    own.extend(pol.parsed.problem(a, message, Reason.BACKEND_NOT_FOUND if a is DEFAULT_BACKEND
                                  else Reason.UNSUPPORTED) for a, message in problems)
    return errors


def _error_routes(state: ClusterState, ing: Ingress, pol: IngressPolicy, errors: ErrorBackend,
                  paths: list[Candidate], clusters: HasCluster, policies: PolicyIndex | None
                  ) -> list[Candidate]:
    """The error route on each host of the Ingress (see :mod:`.error_pages`)."""
    diags: list[Diagnostic] = []
    field_path = pol.parsed.field(DEFAULT_BACKEND)
    action, access, target = _backend_action(state, ing, errors.backend, field_path, clusters,
                                             diags, policies)
    out: list[Candidate] = []
    for host, c in {c.host: c for c in paths}.items():
        name = f"{c.route.name.rsplit('/rule/', 1)[0]}/errors/{host or '*'}"
        route = pol.apply_default(error_route(name, c.route, errors, action, access))
        out.append(Candidate(host, route.match, field_path, f"error route {errors.path!r}",
                              route, tuple(diags), target))
    return out


def _app_roots(pol: IngressPolicy, paths: list[Candidate]) -> list[Candidate]:
    """``app-root``: one redirect of exactly ``/`` per host of the Ingress."""
    out: list[Candidate] = []
    hosts = {c.host: c for c in paths}
    for host, c in hosts.items():
        name = f"{c.route.name.rsplit('/rule/', 1)[0]}/app-root/{host or '*'}"
        route = app_root_route(pol, name, c.route)
        if route is not None:
            out.append(Candidate(host, route.match, pol.parsed.field(APP_ROOT),
                                  "app-root '/'", route, ()))
    return out


def path_match(
    path: IngressPath, ref: ObjectRef, field_path: str, diagnostics: list[Diagnostic]
) -> PathMatch | None:
    """The Envoy match for an Ingress path, or None (with a diagnostic) when it is unusable."""
    value = path.path
    bad = None
    if _SUSPECT.search(value) is not None:  # one scan instead of one per sequence
        bad = next((f"contain {s!r}" for s in _BAD_SEQUENCES if s in value), None)
        if bad is None and (value.endswith("/..") or value.endswith("/.")):
            bad = f"end with {value[value.rindex('/'):]!r}"
    if bad is not None:
        diagnostics.append(Diagnostic(ref, f"{field_path}.path", Reason.INVALID_VALUE,
                                      f"{value!r} must not {bad}"))
        return None
    if path.path_type == "Exact":
        return PathMatch(kind=MatchKind.EXACT, path=value)
    # Prefix and ImplementationSpecific: a trailing slash is ignored ("/foo/" is
    # "/foo"); "/" matches everything, so it is a plain prefix.
    trimmed = value.rstrip("/")
    if not trimmed:
        return PathMatch(kind=MatchKind.PREFIX, path="/")
    return PathMatch(kind=MatchKind.PATH_PREFIX, path=trimmed)


def _backend_action(
    state: ClusterState, ing: Ingress, backend: IngressBackend, field_path: str,
    clusters: HasCluster, diagnostics: list[Diagnostic], policies: PolicyIndex | None = None,
) -> tuple[RouteAction, AccessPolicy | None, Target | None]:
    """Forward to the backend's cluster, or a direct 503 (with a diagnostic) when
    unresolvable; with the Service cluster forwarded to."""
    ref = ing.meta.ref
    ns = ref.namespace
    if backend.resource is not None:
        diagnostics.append(Diagnostic(ref, f"{field_path}.resource", Reason.UNSUPPORTED,
                                      f"resource backends ({backend.resource}) are not "
                                      "supported; this path answers 503"))
        return UNAVAILABLE, None, None
    service = state.services.get((ns, backend.service))
    svc_field = f"{field_path}.service"
    if service is None:
        diagnostics.append(Diagnostic(ref, f"{svc_field}.name", Reason.BACKEND_NOT_FOUND,
                                      f"Service {ns}/{backend.service} not found"))
        return UNAVAILABLE, None, None
    if backend.port_number is not None:
        sp = service.port_by_number(backend.port_number)
        port_field, wanted = f"{svc_field}.port.number", str(backend.port_number)
    else:
        sp = service.port_by_name(backend.port_name or "")
        port_field, wanted = f"{svc_field}.port.name", repr(backend.port_name)
    if sp is None:
        diagnostics.append(Diagnostic(
            ref, port_field, Reason.PORT_NOT_FOUND,
            f"port {wanted} not found on Service {ns}/{service.meta.name}"))
        return UNAVAILABLE, None, None
    if sp.protocol != "TCP":
        diagnostics.append(Diagnostic(
            ref, port_field, Reason.INVALID_VALUE,
            f"port {wanted} of Service {ns}/{service.meta.name} is {sp.protocol}, not TCP"))
        return UNAVAILABLE, None, None
    cluster = names.service_cluster(ns, service.meta.name, sp.port)
    if not clusters((ns, service.meta.name), cluster):
        diagnostics.append(Diagnostic(ref, f"{svc_field}.name", Reason.BACKEND_NOT_FOUND,
                                      f"Service {ns}/{service.meta.name} cannot be a backend "
                                      "(see its own diagnostics)"))
        return UNAVAILABLE, None, None
    access, problems = route_access(state, ing, service, sp, policies)
    diagnostics.extend(problems)
    return (Forward(backends=(WeightedBackend(cluster=cluster),)), access,
            ((ns, service.meta.name), cluster))


# --- ordering --------------------------------------------------------------


def precedence(route: Route) -> tuple[int, int, str]:
    """Envoy match order (first match wins): every Exact path, then prefixes longest first.

    Kubernetes: "precedence will be given first to the longest matching path.
    If two paths are still equally matched, precedence will be given to paths
    with an exact path type over prefix path type." An Exact path can only tie
    with or beat the prefixes that also match it, so Exact first is equivalent.
    """
    if route.match.kind is MatchKind.EXACT:
        return (0, 0, route.match.path)
    if route.match.kind is MatchKind.REGEX:
        # ingress-nginx orders regex locations longest first; they come before prefixes.
        return (1, -len(route.match.path), route.match.path)
    return (2, -len(route.match.path), route.match.path)
