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
  traffic never falls through to a shorter prefix.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Set
from dataclasses import dataclass, field, replace

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
    VirtualHost,
    WeightedBackend,
)
from kxds.kube.ingress_class import our_ingresses
from kxds.kube.models import ClusterState, Ingress, IngressBackend, IngressPath
from kxds.memo import TranslationMemo
from kxds.translators.access import route_access
from kxds.translators.config import TranslateConfig
from kxds.translators.network_policy import PolicyIndex

CATCH_ALL = ""
"""The host of rules without ``host``: their virtual host has domain ``*``."""

UNAVAILABLE = DirectResponse(status=503, body="backend not found")

# Sequences the API server rejects in Exact and Prefix paths (Ingress
# validation); after Envoy's path normalization such a rule could never match.
_BAD_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F", "?", "#")
_SUSPECT = re.compile(r"//|/\.|%2[fF]|[?#]")
"""Matches every path with one of :data:`_BAD_SEQUENCES` or ending in ``/.`` or ``/..``."""


def http_listener(config: TranslateConfig) -> HttpListener:
    """The plain-HTTP listener; its route table has the same name."""
    name = f"http/{config.http_port}"
    return HttpListener(name=name, address=config.listen_address, port=config.http_port,
                        route_table=name, client_ip=config.client_ip)


def translate_ingresses(
    state: ClusterState, config: TranslateConfig, clusters: Set[str],
    memo: TranslationMemo | None = None,
) -> tuple[HttpListener, RouteTable, list[Diagnostic]]:
    """The HTTP listener and route table of every Ingress of our class.

    ``clusters`` are the names of the clusters that exist: a backend without one
    is unresolvable. ``memo``: see :func:`virtual_hosts`.
    """
    listener = http_listener(config)
    ours = our_ingresses(state, config.ingress_class)
    hosts, diagnostics = virtual_hosts(state, ours, clusters, memo)
    table = (_route_table(listener.route_table, *hosts) if memo is None
             else memo.get("route-table", hosts, listener.route_table, _route_table,
                           listener.route_table, *hosts))
    return listener, table, diagnostics


def _route_table(name: str, *hosts: VirtualHost) -> RouteTable:
    return RouteTable(name=name, virtual_hosts=hosts)


# --- building the routes ---------------------------------------------------


@dataclass(slots=True)
class _Routes:
    """Routes collected per host, with the first claimant of each match."""

    by_host: dict[str, list[Route]] = field(default_factory=dict)
    owners: dict[str, dict[PathMatch, ObjectRef]] = field(default_factory=dict)
    """Host -> match -> the Ingress that claimed it first."""
    refs: dict[str, set[ObjectRef]] = field(default_factory=dict)
    default: Route | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    policies: PolicyIndex | None = None
    """The state's NetworkPolicies, indexed once for every route's access rules."""


def virtual_hosts(
    state: ClusterState, ingresses: Iterable[Ingress], clusters: Set[str],
    memo: TranslationMemo | None = None,
) -> tuple[tuple[VirtualHost, ...], list[Diagnostic]]:
    """The virtual hosts serving ``ingresses`` (oldest first), sorted by name.

    With ``memo``, an Ingress whose inputs (itself, its Services and, when
    NetworkPolicies may apply, what they read) are unchanged reuses its routes,
    and a host whose routes are unchanged reuses its virtual host; when every
    Ingress's routes are the same as last time, so is the result.
    """
    policies = policy_index(state, memo)
    if memo is None:
        # Merged as they come: each Ingress's intermediate results are dropped at once.
        return _merge_all((ingress_routes(state, ing, clusters, policies)
                           for ing in ingresses), policies, None)
    ones = []
    for ing in ingresses:
        objects, values = _ingress_inputs(state, ing, policies, memo)
        ones.append(memo.get("ingress", objects, values,
                             _canonical_routes, memo, state, ing, clusters, policies))
    hosts, diagnostics = memo.get("all-ingresses", tuple(ones), None,
                                  _merge_all, ones, policies, memo)
    return hosts, list(diagnostics)


def _canonical_routes(memo: TranslationMemo, state: ClusterState, ing: Ingress,
                      clusters: Set[str], policies: PolicyIndex) -> IngressRoutes:
    """:func:`ingress_routes`, as the very object of last time when they are equal.

    An input of the Ingress changed (an EndpointSlice its access rules read,
    say) without changing its routes: later steps then see it unchanged.
    """
    return memo.canonical("ingress-routes", ing.meta.key,
                          ingress_routes(state, ing, clusters, policies))


def _merge_all(ones: Iterable[IngressRoutes], policies: PolicyIndex,
               memo: TranslationMemo | None
               ) -> tuple[tuple[VirtualHost, ...], list[Diagnostic]]:
    """Merge the routes of every Ingress (oldest first) into virtual hosts."""
    acc = _Routes(policies=policies)
    for one in ones:
        _merge(one, acc)
    hosts = [_memo_virtual_host(host, acc, memo) for host in sorted(acc.by_host)]
    if CATCH_ALL not in acc.by_host and acc.default is not None:
        hosts.append(_memo_virtual_host(CATCH_ALL, acc, memo))
    hosts.sort(key=lambda vh: vh.name)
    return tuple(hosts), acc.diagnostics


def policy_index(state: ClusterState, memo: TranslationMemo | None) -> PolicyIndex:
    """The state's :class:`PolicyIndex`; with ``memo``, rebuilt only when a policy changed."""
    if memo is None:
        return PolicyIndex.of(state)
    problems = tuple(d for d in state.problems if d.ref.kind == "NetworkPolicy")
    return memo.get("policy-index", (memo.epoch("policies", state.network_policies),),
                    problems, PolicyIndex.of, state)


def _ingress_inputs(state: ClusterState, ing: Ingress, policies: PolicyIndex,
                    memo: TranslationMemo) -> tuple[tuple[object, ...], Hashable]:
    """What :func:`ingress_routes` reads for ``ing``: objects (by identity) and values.

    Its Services; and when a NetworkPolicy of the namespace may select their
    pods, also their EndpointSlices and every Pod, Namespace and NetworkPolicy
    (:func:`kxds.translators.network_policy.service_policy` reads those).
    """
    ns = ing.meta.namespace
    wanted = {p.backend.service for r in ing.rules for p in r.paths}
    if ing.default_backend is not None:
        wanted.add(ing.default_backend.service)
    guarded = bool(policies.get(ns))
    objects: list[object] = [ing]
    shape: list[int] = []
    for name in sorted(wanted):
        service = state.services.get((ns, name))
        objects.append(service)
        slices = state.slices_by_service.get((ns, name), ()) if guarded else ()
        objects += slices
        shape.append(len(slices))
    if not guarded:
        return tuple(objects), (False, tuple(shape))
    objects += (memo.epoch("pods", state.pods), memo.epoch("namespaces", state.namespaces),
                memo.epoch("policies", state.network_policies))
    problems = tuple(d for d in state.problems if d.ref.kind == "NetworkPolicy")
    return tuple(objects), (True, tuple(shape), problems)


@dataclass(frozen=True, slots=True)
class _Candidate:
    """One path (or the default backend) of an Ingress, before conflicts are settled."""

    host: str
    match: PathMatch
    field_path: str
    described: str
    """The path as the conflict message names it: type and value as written."""
    route: Route
    diagnostics: tuple[Diagnostic, ...]
    """Problems of its backend: reported only when the path is not a conflict."""


@dataclass(frozen=True, slots=True)
class IngressRoutes:
    """Everything one Ingress contributes, independent of the other Ingresses."""

    ref: ObjectRef
    paths: tuple[_Candidate, ...]
    default: _Candidate | None
    diagnostics: tuple[Diagnostic, ...]
    """Problems of the Ingress itself (unusable paths): always reported."""


def ingress_routes(state: ClusterState, ing: Ingress, clusters: Set[str],
                   policies: PolicyIndex | None) -> IngressRoutes:
    """The route of each usable path of ``ing`` and of its default backend."""
    ref = ing.meta.ref
    own: list[Diagnostic] = []
    paths: list[_Candidate] = []
    for i, rule in enumerate(ing.rules):
        for j, path in enumerate(rule.paths):
            field_path = f"spec.rules[{i}].http.paths[{j}]"
            match = path_match(path, ref, field_path, own)
            if match is None:
                continue
            diags: list[Diagnostic] = []
            action, access = _backend_action(state, ing, path.backend, f"{field_path}.backend",
                                             clusters, diags, policies)
            route = Route(name=names.ingress_route(ref.namespace, ref.name, i, j), ref=ref,
                          match=match, action=action, access=access,
                          wildcard_host=rule.host if rule.host.startswith("*.") else None)
            paths.append(_Candidate(rule.host, match, field_path,
                                    f"{path.path_type} {path.path!r}", route, tuple(diags)))
    default = None
    if ing.default_backend is not None:
        diags = []
        action, access = _backend_action(state, ing, ing.default_backend, "spec.defaultBackend",
                                         clusters, diags, policies)
        match = PathMatch(kind=MatchKind.PREFIX, path="/")
        default = _Candidate(CATCH_ALL, match, "spec.defaultBackend", "", Route(
            name=names.ingress_default_route(ref.namespace, ref.name), ref=ref, match=match,
            action=action, access=access), tuple(diags))
    return IngressRoutes(ref=ref, paths=tuple(paths), default=default, diagnostics=tuple(own))


def _merge(one: IngressRoutes, acc: _Routes) -> None:
    """Add one Ingress's routes; a path or default backend already claimed is a conflict."""
    ref = one.ref
    acc.diagnostics += one.diagnostics
    for c in one.paths:
        owners = acc.owners.setdefault(c.host, {})
        owner = owners.get(c.match)
        if owner is not None:
            acc.diagnostics.append(Diagnostic(
                ref, c.field_path, Reason.CONFLICT,
                f"host {c.host or '*'!r} {c.described} is already "
                f"served by {owner}; this path is ignored"))
            continue
        acc.diagnostics += c.diagnostics
        owners[c.match] = ref
        acc.by_host.setdefault(c.host, []).append(c.route)
        acc.refs.setdefault(c.host, set()).add(ref)
    if one.default is None:
        return
    if acc.default is not None:
        acc.diagnostics.append(Diagnostic(
            ref, "spec.defaultBackend", Reason.CONFLICT,
            f"the default backend is already set by {acc.default.ref}; this one is ignored"))
        return
    acc.diagnostics += one.default.diagnostics
    acc.default = one.default.route


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
    clusters: Set[str], diagnostics: list[Diagnostic], policies: PolicyIndex | None = None,
) -> tuple[RouteAction, AccessPolicy | None]:
    """Forward to the backend's cluster, or a direct 503 (with a diagnostic) when unresolvable."""
    ref = ing.meta.ref
    ns = ref.namespace
    service = state.services.get((ns, backend.service))
    svc_field = f"{field_path}.service"
    if service is None:
        diagnostics.append(Diagnostic(ref, f"{svc_field}.name", Reason.BACKEND_NOT_FOUND,
                                      f"Service {ns}/{backend.service} not found"))
        return UNAVAILABLE, None
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
        return UNAVAILABLE, None
    if sp.protocol != "TCP":
        diagnostics.append(Diagnostic(
            ref, port_field, Reason.INVALID_VALUE,
            f"port {wanted} of Service {ns}/{service.meta.name} is {sp.protocol}, not TCP"))
        return UNAVAILABLE, None
    cluster = names.service_cluster(ns, service.meta.name, sp.port)
    if cluster not in clusters:
        diagnostics.append(Diagnostic(ref, f"{svc_field}.name", Reason.BACKEND_NOT_FOUND,
                                      f"Service {ns}/{service.meta.name} cannot be a backend "
                                      "(see its own diagnostics)"))
        return UNAVAILABLE, None
    access, problems = route_access(state, ing, service, sp, policies)
    diagnostics.extend(problems)
    return Forward(backends=(WeightedBackend(cluster=cluster),)), access


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
    return (1, -len(route.match.path), route.match.path)


def _memo_virtual_host(host: str, acc: _Routes, memo: TranslationMemo | None) -> VirtualHost:
    """:func:`_virtual_host`; with ``memo``, reused while its routes are the same objects."""
    if memo is None:
        return _virtual_host(host, acc)
    own = acc.by_host.get(host, ())
    # What _virtual_host reads: this host's routes, the catch-all host's routes
    # (for a wildcard host), and the default route. Its refs are those routes' refs.
    shared = acc.by_host.get(CATCH_ALL, ()) if host.startswith("*.") else ()
    return memo.get("virtual-host", (*own, *shared, acc.default), (host, len(own)),
                    _virtual_host, host, acc)


def _virtual_host(host: str, acc: _Routes) -> VirtualHost:
    routes = sorted(acc.by_host.get(host, ()), key=precedence)
    if host.startswith("*."):
        # A deeper subdomain reaches this virtual host only because Envoy's
        # wildcard matches several labels; it must be served as if the wildcard
        # had not matched: by the rules without a host, then the default backend.
        # A one-label host did match the wildcard rule, and "requests are matched
        # against the host before the IngressRuleValue" (IngressRule API docs): a
        # path the wildcard rule lacks goes to the default backend, never to the
        # rules without a host, exactly as for an exact host.
        routes += [replace(r, below_wildcard_host=host)
                   for r in sorted(acc.by_host.get(CATCH_ALL, ()), key=precedence)]
    # A "/" that matches every request of this virtual host makes the default unreachable.
    catch_all = any(r.match.kind is MatchKind.PREFIX and r.wildcard_host is None
                    and r.below_wildcard_host is None for r in routes)
    if acc.default is not None and not catch_all:
        routes.append(acc.default)
    return VirtualHost(name=names.virtual_host(host), domains=(host or "*",),
                       routes=tuple(routes),
                       refs=_sorted_refs((*acc.refs.get(host, ()), *(r.ref for r in routes))))


def _sorted_refs(refs: Iterable[ObjectRef]) -> tuple[ObjectRef, ...]:
    """``tuple(sorted(set(refs)))``, through plain tuple keys, which hash and compare in C."""
    unique = {(r.kind, r.namespace, r.name): r for r in refs}
    return tuple(unique[k] for k in sorted(unique))
