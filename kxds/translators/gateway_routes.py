"""Gateway API front-end, part two: HTTPRoutes -> IR routes, with their status (pure).

GRPCRoutes take the same way: the parser gives their rules in HTTPRoute terms
(a method match is the path of the call), their route names start ``grpcroute/``,
and the TLS stage moves their backends to plain HTTP/2 clusters.

Semantics (Gateway API v1.4, ``HTTPRoute`` and ``Gateway`` API reference):

* A parent reference attaches to the listeners of one of our Gateways that
  ``sectionName`` and ``port`` select (none: ``NoMatchingParent``), that admit
  the Route's namespace and kind (none: ``NotAllowedByListeners``) and whose
  hostname intersects the Route's (none: ``NoMatchingListenerHostname``).
* Hostname intersection (:func:`intersect`): a wildcard covers any number of
  labels (``*.example.com`` matches ``a.b.example.com``, not ``example.com``);
  of two intersecting hostnames the more specific one is served.
* Matches, filters and retries: :mod:`kxds.translators.gateway_filters`. What kxds
  cannot serve (``sessionPersistence``, ``ExtensionRef`` and other
  filters, a regex Envoy would refuse) makes the parent ``Accepted=False``
  (``UnsupportedValue``) and the Route is not served there: serving it without
  them would route more than it asks for.
* A backend reference that does not resolve (``BackendNotFound``,
  ``RefNotPermitted``, ``InvalidKind``) sets ``ResolvedRefs=False``; the spec
  wants a 500 for its share of the requests, and the IR has no weighted
  direct response yet, so the whole rule answers 500. So does a rule
  without backends or whose weights are all zero. A GRPCRoute rule answers
  503 instead, which gRPC clients see as ``UNAVAILABLE``, the status the
  GRPCRoute spec asks for.
* Precedence across the Routes of a host: Exact, then RegularExpression
  (longest first), then the longest prefix; then a method match, then more
  header matches, then more query parameter matches; then the oldest Route,
  then namespace/name, then rule and match order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from kxds import names
from kxds.diagnostics import Diagnostic, Reason
from kxds.ir import (
    AccessPolicy,
    DirectResponse,
    Forward,
    MatchKind,
    Mirror,
    PathMatch,
    Route,
    RouteAction,
    WeightedBackend,
)
from kxds.kube.gateway_models import (
    GROUP,
    BackendRef,
    GroupKind,
    GRPCRoute,
    HTTPRoute,
    L4Route,
    ParentReference,
    RouteMatch,
    RouteRule,
)
from kxds.kube.models import ClusterState, Key
from kxds.translators.access import all_admit, route_access
from kxds.translators.gateway import ListenerPlan, granted
from kxds.translators.gateway_filters import (
    BACKEND_FILTERS,
    ROUTE_FILTERS,
    cors_problems,
    filter_problems,
    header_changes,
    header_matches,
    match_problems,
    path_match,
    path_rewrite,
    query_matches,
    redirect,
    retry_policy,
    route_policy,
    whole_timeout_ms,
)
from kxds.translators.gateway_status import (
    CONTROLLER_NAME,
    Condition,
    ParentStatus,
    RouteStatus,
)
from kxds.translators.network_policy import PolicyIndex

SERVER_ERROR = DirectResponse(status=500, body="backend not available")
UNAVAILABLE = DirectResponse(status=503, body="backend not available")
"""A broken GRPCRoute rule's answer: Envoy answers a gRPC call's local reply with the
``grpc-status`` of its HTTP status, and 503 is ``UNAVAILABLE`` (the GRPCRoute spec:
traffic to a rule whose backends are all invalid MUST receive ``UNAVAILABLE``)."""
REDIRECT_PLACEHOLDER = DirectResponse(status=302)
"""A redirecting rule's action before its match gives the path (never served)."""

HasCluster = Callable[[Key, str], bool]
Target = tuple[Key, str]
AnyRoute = HTTPRoute | GRPCRoute
"""A Route kind served on HTTP listeners (a GRPCRoute comes with its rules in HTTPRoute terms)."""
Rank = tuple[int, int, int, int, int, str, int, int]
"""A route's precedence key (see :func:`precedence`): smaller comes first."""


def intersect(listener: str | None, route: str) -> str | None:
    """The hostnames both a listener and a Route hostname match, as one hostname; None
    when they share none. ``listener`` None matches every host."""
    if listener is None or listener == route:
        return route
    if listener.startswith("*.") and route.endswith(listener[1:]):
        return route  # a name (or narrower wildcard) under the listener's wildcard
    if route.startswith("*.") and listener.endswith(route[1:]):
        return listener
    return None


def route_hosts(listener: str | None, hostnames: tuple[str, ...]) -> list[str]:
    """The hosts a Route serves on a listener (``""``: every host)."""
    if not hostnames:
        return [listener or ""]
    return sorted({h for h in (intersect(listener, n) for n in hostnames) if h is not None})


def unsupported(route: AnyRoute) -> list[str]:
    """Each field of ``route`` the IR cannot serve yet, as ``field: what``."""
    out: list[str] = []
    for i, rule in enumerate(route.rules):
        at = f"spec.rules[{i}]"
        for j, m in enumerate(rule.matches):
            out += match_problems(m, f"{at}.matches[{j}]")
        out += filter_problems(rule.filters, at, ROUTE_FILTERS)
        out += [f"{at}.{f}: not supported yet" for f in rule.unsupported]
        for k, b in enumerate(rule.backend_refs):
            out += filter_problems(b.filters, f"{at}.backendRefs[{k}]", BACKEND_FILTERS)
    return out


@dataclass(slots=True)
class RouteOutcome:
    """One HTTPRoute's contribution: routes per host, its status, its problems."""

    hosts: dict[tuple[Key, str, str], list[tuple[Rank, Route]]] = field(default_factory=dict)
    """(Gateway, listener, host) -> (precedence key, route)."""
    backends: set[Target] = field(default_factory=set)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    attached: dict[tuple[Key, str], int] = field(default_factory=dict)
    status: RouteStatus | None = None
    """Written when it has a parent of ours, or when ``stale``."""
    stale: bool = False
    """The Route's status holds entries of ours though no parent is ours any more:
    its (empty) status takes them back."""
    policies: PolicyIndex | None = None
    """The translation's NetworkPolicy index, for the backends' access rules."""


def route_outcome(state: ClusterState, route: AnyRoute,
                  listeners: Mapping[Key, list[ListenerPlan]],
                  clusters: HasCluster, order: int,
                  policies: PolicyIndex | None = None) -> RouteOutcome:
    """Attach ``route`` to its parents among ``listeners`` (by Gateway); ``order``
    is its place among all Routes by age (precedence after path)."""
    out = RouteOutcome(policies=policies)
    actions, resolved = _actions(state, route, clusters, out)
    problems = unsupported(route)
    parents: list[ParentStatus] = []
    for p in route.parent_refs:
        gw_key = (p.namespace or route.meta.namespace, p.name)
        if p.group != GROUP or p.kind != "Gateway" or gw_key not in listeners:
            continue  # not a parent of ours: its controller reports it
        accepted, attached = _attach(state, route, p, listeners[gw_key])
        if accepted.status and problems:
            accepted = Condition("Accepted", False, "UnsupportedValue", "; ".join(problems))
        parents.append(ParentStatus(parent=p, conditions=(accepted, resolved)))
        if not accepted.status:
            out.diagnostics.append(Diagnostic(route.meta.ref, "spec.parentRefs", Reason.NOT_ALLOWED
                                              if accepted.reason != "UnsupportedValue"
                                              else Reason.UNSUPPORTED,
                                              f"{p.name}: {accepted.reason}: {accepted.message}"))
            continue
        for plan in attached:
            key = (plan.gateway, plan.listener.name)
            out.attached[key] = out.attached.get(key, 0) + 1
            for host in route_hosts(plan.listener.hostname, route.hostnames):
                _add_routes(out, (*key, host), route, actions, order, plan)
    if not out.hosts:
        out.backends.clear()  # attached nowhere: its backends get no cluster
    out.status = RouteStatus(ref=route.meta.ref, generation=route.meta.generation,
                             parents=tuple(parents))
    out.stale = not parents and CONTROLLER_NAME in route.status_controllers
    return out


def _attach(state: ClusterState, route: AnyRoute | L4Route, p: ParentReference,
            plans: list[ListenerPlan]) -> tuple[Condition, list[ListenerPlan]]:
    """``Accepted`` for one parent reference, and the listeners it attaches to."""
    selected = [pl for pl in plans
                if (p.section_name is None or pl.listener.name == p.section_name)
                and (p.port is None or pl.listener.port == p.port)]
    if not selected:
        return Condition("Accepted", False, "NoMatchingParent",
                         "no listener matches sectionName/port"), []
    kind = GroupKind(group=GROUP, kind=route.meta.ref.kind)
    allowed = [pl for pl in selected if pl.accepted and kind in pl.supported_kinds
               and _namespace_allowed(state, route, pl)]
    if not allowed:
        return Condition("Accepted", False, "NotAllowedByListeners",
                         f"no accepted listener admits {kind.kind}s from namespace "
                         f"{route.meta.namespace}"), []
    matching = [pl for pl in allowed if route_hosts(pl.listener.hostname, route.hostnames)]
    if not matching:
        return Condition("Accepted", False, "NoMatchingListenerHostname",
                         "no listener hostname intersects the route's hostnames"), []
    return Condition("Accepted", True, "Accepted", ""), matching


def _namespace_allowed(state: ClusterState, route: AnyRoute | L4Route,
                       plan: ListenerPlan) -> bool:
    allowed = plan.listener.allowed_routes
    ns = route.meta.namespace
    if allowed.namespaces_from == "All":
        return True
    if allowed.namespaces_from == "Same":
        return ns == plan.gateway[0]
    if allowed.namespaces_from == "Selector" and allowed.selector is not None:
        namespace = state.namespaces.get(("", ns))
        return namespace is not None and allowed.selector.matches(namespace.meta.labels)
    return False  # None, or Selector without a selector: nothing (fail closed)


def _backend(state: ClusterState, route: AnyRoute, b: BackendRef, field_path: str,
             clusters: HasCluster, out: RouteOutcome
             ) -> tuple[str | None, AccessPolicy | None, Condition | None]:
    """The cluster a backend reference names and the client-IP rules of its Service
    port (NetworkPolicy, loadBalancerSourceRanges, as for an Ingress), or why it does
    not resolve."""
    ns = b.namespace or route.meta.namespace
    name = f"{ns}/{b.name}"
    if b.group != "" or b.kind != "Service":
        return None, None, Condition("ResolvedRefs", False, "InvalidKind",
                               f"{field_path}: {b.group or 'core'}/{b.kind} {name} is not a "
                               "Service")
    if ns != route.meta.namespace and not granted(state, route.meta.ref.kind,
                                                  route.meta.namespace, "", "Service", ns,
                                                  b.name):
        return None, None, Condition("ResolvedRefs", False, "RefNotPermitted",
                               f"{field_path}: no ReferenceGrant in {ns} allows "
                               f"{route.meta.ref.kind}s of "
                               f"{route.meta.namespace} to use Service {name}")
    service = state.services.get((ns, b.name))
    port = service.port_by_number(b.port) if service is not None and b.port else None
    if service is None or port is None or port.protocol != "TCP":
        what = "not found" if service is None else f"has no TCP port {b.port}"
        return None, None, Condition("ResolvedRefs", False, "BackendNotFound",
                                     f"{field_path}: Service {name} {what}")
    cluster = names.service_cluster(ns, b.name, port.port)
    if not clusters((ns, b.name), cluster):
        return None, None, Condition("ResolvedRefs", False, "BackendNotFound",
                                     f"{field_path}: Service {name} cannot be a backend "
                                     "(see its own diagnostics)")
    access, problems = route_access(state, None, service, port, out.policies)
    out.diagnostics.extend(problems)
    return cluster, access, None


def _rule_action(state: ClusterState, route: AnyRoute, i: int, rule: RouteRule,
                 clusters: HasCluster, out: RouteOutcome, problems: list[Condition]
                 ) -> tuple[RouteAction, AccessPolicy | None]:
    """Forward by weight, or 500 when a backend with a share does not resolve (the
    whole rule: the IR has no weighted direct response yet) or none has a share.
    A redirect is made per match (:func:`_match_action`); here a placeholder."""
    backends: list[WeightedBackend] = []
    accesses: list[AccessPolicy | None] = []
    broken = False
    for k, b in enumerate(rule.backend_refs):
        cluster, access, problem = _backend(state, route, b,
                                            f"spec.rules[{i}].backendRefs[{k}]", clusters, out)
        if problem is not None:
            problems.append(problem)
            broken = broken or b.weight > 0
        elif cluster is not None and b.weight > 0:
            backends.append(WeightedBackend(
                cluster=cluster, weight=b.weight,
                request_headers=next((header_changes(f.request_headers) for f in b.filters
                                      if f.request_headers), None),
                response_headers=next((header_changes(f.response_headers) for f in b.filters
                                       if f.response_headers), None)))
            accesses.append(access)
            out.backends.add(((b.namespace or route.meta.namespace, b.name), cluster))
    mirrors = _mirrors(state, route, i, rule, clusters, out, problems)
    out.diagnostics.extend(Diagnostic(route.meta.ref, where, Reason.UNSUPPORTED, why)
                           for where, why in cors_problems(rule.filters, f"spec.rules[{i}]"))
    if any(f.redirect is not None for f in rule.filters):
        _no_effect_on_redirect(route, i, rule, out)
        return REDIRECT_PLACEHOLDER, None
    if broken or not backends:
        return (UNAVAILABLE if isinstance(route, GRPCRoute) else SERVER_ERROR), None
    per_try = rule.backend_request_timeout_ms or None
    retry = retry_policy(rule.retry)
    return (Forward(backends=tuple(backends),
                    timeout_ms=whole_timeout_ms(rule.request_timeout_ms, per_try, retry),
                    mirrors=mirrors, per_try_timeout_ms=per_try, retry=retry),
            all_admit(accesses))


def _no_effect_on_redirect(route: AnyRoute, i: int, rule: RouteRule,
                           out: RouteOutcome) -> None:
    """Report what a redirecting rule cannot act on: no request goes to a backend to be
    retried, and Envoy's CORS filter acts on routes to backends only."""
    at = f"spec.rules[{i}]"
    what = [(f"{at}.retry", "retry")] if rule.retry is not None else []
    what += [(f"{at}.filters[{k}]", "the CORS filter") for k, f in enumerate(rule.filters)
             if f.cors is not None]
    out.diagnostics.extend(Diagnostic(route.meta.ref, field, Reason.UNSUPPORTED,
                                      f"{name} has no effect on a rule that redirects")
                           for field, name in what)


def _mirrors(state: ClusterState, route: AnyRoute, i: int, rule: RouteRule,
             clusters: HasCluster, out: RouteOutcome, problems: list[Condition]
             ) -> tuple[Mirror, ...]:
    """The rule's mirrors whose backends resolve (the others only lose the copies:
    ``ResolvedRefs`` says so, the rule is served). A backend with client-IP rules
    gets no copies: they would reach it from clients its rules may refuse."""
    mirrors: list[Mirror] = []
    for k, f in enumerate(rule.filters):
        if f.mirror is None:
            continue
        where = f"spec.rules[{i}].filters[{k}].requestMirror.backendRef"
        cluster, access, problem = _backend(state, route, f.mirror.backend, where, clusters,
                                            out)
        if problem is not None:
            problems.append(problem)
        elif access is not None:
            out.diagnostics.append(Diagnostic(
                route.meta.ref, where, Reason.UNSUPPORTED,
                f"Service {f.mirror.backend.name} admits only some clients (NetworkPolicy or "
                "loadBalancerSourceRanges), which copies of requests cannot honour; the "
                "mirror is left out"))
        elif cluster is not None:
            mirrors.append(Mirror(cluster=cluster, percent=f.mirror.percent))
            out.backends.add(((f.mirror.backend.namespace or route.meta.namespace,
                               f.mirror.backend.name), cluster))
    return tuple(mirrors)


def _match_action(rule: RouteRule, action: RouteAction, match: PathMatch,
                  plan: ListenerPlan) -> RouteAction:
    """The rule's action for one of its matches on the listener of ``plan``: a
    redirect or a rewrite depends on the path the match matched (and a redirect on
    the listener's port and scheme)."""
    for f in rule.filters:
        if f.redirect is not None:
            return redirect(f.redirect, match, plan.listener.protocol.lower(),
                            plan.listener.port if plan.own_port else None)
        if f.rewrite is not None and isinstance(action, Forward):
            rewrite = path_rewrite(f.rewrite.path, match) if f.rewrite.path else None
            return replace(action, rewrite=rewrite, host_rewrite=f.rewrite.hostname)
    return action


def _broken_answer(route: AnyRoute) -> str:
    return "UNAVAILABLE (503)" if isinstance(route, GRPCRoute) else "500"


def _actions(state: ClusterState, route: AnyRoute, clusters: HasCluster,
             out: RouteOutcome
             ) -> tuple[list[tuple[RouteAction, AccessPolicy | None]], Condition]:
    """Each rule's action, and the Route's ``ResolvedRefs`` condition."""
    problems: list[Condition] = []
    actions = [_rule_action(state, route, i, rule, clusters, out, problems)
               for i, rule in enumerate(route.rules)]
    for c in problems:
        where, what = c.message.split(": ", 1)
        found = c.reason == "BackendNotFound"
        out.diagnostics.append(Diagnostic(
            route.meta.ref, where, Reason.BACKEND_NOT_FOUND if found else Reason.NOT_ALLOWED,
            f"{'' if found else c.reason + ': '}{what}; "
            + ("the mirror is left out" if ".requestMirror." in where
               else f"its rule answers {_broken_answer(route)}")))
    if not problems:
        return actions, Condition("ResolvedRefs", True, "ResolvedRefs", "")
    first = problems[0]
    return actions, Condition("ResolvedRefs", False, first.reason,
                              "; ".join(c.message for c in problems))


def _add_routes(out: RouteOutcome, where: tuple[Key, str, str], route: AnyRoute,
                actions: list[tuple[RouteAction, AccessPolicy | None]], order: int,
                plan: ListenerPlan) -> None:
    ref = route.meta.ref
    routes = out.hosts.setdefault(where, [])
    have = {r.name for _, r in routes}
    for i, (rule, (action, access)) in enumerate(zip(route.rules, actions, strict=True)):
        for j, m in enumerate(rule.matches):
            name = names.cap(f"{ref.kind.lower()}/{ref.namespace}/{ref.name}/rule/{i}/match/{j}")
            if name in have:
                continue  # the same rule through a second listener of the same host
            match = path_match(m.path.type, m.path.value)
            routes.append((precedence(match, order, i, j, m), Route(
                name=name, ref=ref, match=match, action=_match_action(rule, action, match, plan),
                access=access, headers=header_matches(m), query=query_matches(m),
                policy=route_policy(rule.filters))))


attach = _attach
"""Which listeners of one parent a Route (of any kind) attaches to, and ``Accepted``."""


def precedence(match: PathMatch, order: int, rule: int, index: int,
               conditions: RouteMatch | None = None) -> Rank:
    """Envoy order (first match wins), per the HTTPRoute spec: Exact, then
    RegularExpression (longest first: implementation-specific), then the longest
    prefix; then a method match, more header matches, more query parameter matches;
    on ties the oldest Route (``order``), then rule and match order."""
    c = conditions or RouteMatch()
    rest = (0 if c.method else 1, -len(c.headers), -len(c.query_params), f"{order:09d}",
            rule, index)
    if match.kind is MatchKind.EXACT:
        return (0, 0, *rest)
    if match.kind is MatchKind.FULL_REGEX:
        return (1, -len(match.path), *rest)
    return (2, -len(match.path), *rest)
