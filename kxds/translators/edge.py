"""The edge gateway's translation: ClusterState -> IR, as queries (:mod:`kxds.incremental`).

:func:`translate` gives the edge view's IR: a cluster (and load assignment)
per Service port that something routes to, the Ingress routes on the HTTP
listener, and TLS. It is
written as a few queries, each a pure function of what it reads, so that a
caller keeping a :class:`~kxds.incremental.Store` per view recomputes only
what a change reaches:

- :data:`SERVICE` per Service: the clusters and load assignments of its
  ports that :data:`WANTED` names; :data:`SERVICES` all of them in name order;
- :data:`CLUSTER_NAMES` per Service: what a route to it may name (a function
  of the Service alone: routes depend neither on endpoints nor on which
  clusters are built);
- :data:`REFERENCED`: the clusters that routes, default backends and
  passthrough chains forward to, by Service; :data:`WANTED` one Service's
  share (a port nothing routes to gets no cluster: a Service of thousands of
  ports would otherwise cost every edge Envoy a cluster each);
- :data:`POLICIES`: the NetworkPolicies indexed by namespace;
- :data:`OUR_KEYS`: the Ingresses of our class, oldest first (the same while
  Ingresses change in place, so what is read per Ingress through it stops there);
- :data:`INGRESS` per Ingress of our class: its routes;
  :data:`ROUTES` all of them merged into virtual hosts (an Ingress's changed routes
  are put in place and only the hosts they name merged again);
- :data:`CONCERNS` per Ingress: which passes over the Ingresses (TLS, host names,
  service-upstream, tracing) read it, and which passes over every route (cluster
  options, external auth) its routes ask for; :data:`CONCERNED` per pass: those
  Ingresses. A pass is handed only those, and one over every route is skipped when
  no Ingress asks: an Ingress changed is looked at, not every Ingress;
- :data:`CERTIFICATE` per TLS Secret: its key pair inspected (the costly part
  of a TLS check; validity at the rebuild's instant is checked on top);
- :data:`EDGE`: the whole IR, with TLS applied and checked for consistency.

EndpointSlices change far more often than anything else (STYLE.md "Split the
cache by churn"). When only load assignments moved, :data:`SERVICES` and
:data:`EDGE` patch their last value (their ``update`` functions) instead of
assembling every Service's share again: a slice change costs time in
proportion to the Services it touches.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter

from kxds.certs.check import Inspected, inspect_key_pair
from kxds.diagnostics import Diagnostic, ObjectRef, Reason
from kxds.incremental import Changes, Context, Query, Store
from kxds.ir import IR, Cluster, HttpListener, LoadAssignment, Route, consistency_problems
from kxds.kube.models import ClusterState, Ingress, Key, Service
from kxds.translators import host_names, ingress, service_upstream, tls, tls_plan, tracing
from kxds.translators.auth_external import auth_clusters, auth_targets, checks_externally
from kxds.translators.config import TranslateConfig
from kxds.translators.edge_inputs import HTTPS_PORTS, OUR_KEYS, PARSE_PROBLEMS
from kxds.translators.gateway_edge import GatewayApi, merge_into, translate_gateway_api
from kxds.translators.gateway_l4 import add_l4
from kxds.translators.gateway_tls import gateway_https
from kxds.translators.host_names import apply_host_names
from kxds.translators.ingress import Target
from kxds.translators.ingress_merge import MergedRoutes, merge_routes, route_table, told_apart
from kxds.translators.network_policy import PolicyIndex
from kxds.translators.service_upstream import apply_service_upstream
from kxds.translators.services import OneService, cluster_names, translate_service
from kxds.translators.tracing import apply_tracing
from kxds.translators.translation import (
    Translation,
    TranslationBug,
    guarded,
    sorted_diagnostics,
)
from kxds.translators.upstream_lb import apply_cluster_options, asks_options


def translate(state: ClusterState, config: TranslateConfig | None = None,
              store: Store | None = None) -> Translation:
    """The edge gateway's IR and the problems found on the way.

    ``store``: the view's query store, kept by the caller across rebuilds
    (one rebuild at a time); without one, everything is computed afresh. The
    result is the same either way.
    """
    store = store if store is not None else Store()
    ctx = store.begin(state, config or TranslateConfig())
    try:
        return ctx.query(EDGE, None).translation
    finally:
        store.end()


# --- Services ------------------------------------------------------------------------

_NO_SERVICE = OneService((), (), frozenset())


def _service(ctx: Context, key: Key) -> OneService:
    service = ctx.state.services.get(key)
    if service is None:
        return _NO_SERVICE
    slices, wanted = ctx.state.slices_by_service.get(key, ()), ctx.query(WANTED, key)
    return guarded(service.meta.ref, lambda: translate_service(service, slices, wanted),
                   lambda problem: OneService((), (), frozenset((problem,)), failed=True))


SERVICE: Query[Key, OneService] = Query("service", _service)


@dataclass(frozen=True, slots=True, eq=False)
class ServicesPart:
    """Every Service's clusters and load assignments, sorted by name."""

    clusters: tuple[Cluster, ...]
    load_assignments: tuple[LoadAssignment, ...]
    diagnostics: frozenset[Diagnostic]
    parts: Mapping[Key, OneService]
    positions: Mapping[str, int]
    """Cluster name -> position of its load assignment in ``load_assignments``."""
    failed: bool = False
    """Whether a Service's translation failed (routes to it must answer 503)."""


def _services(ctx: Context, _: None) -> ServicesPart:
    parts = {key: ctx.query(SERVICE, key) for key in ctx.state.services}
    clusters = sorted((c for p in parts.values() for c in p.clusters), key=attrgetter("name"))
    assignments = sorted((a for p in parts.values() for a in p.load_assignments),
                         key=attrgetter("cluster"))
    return ServicesPart(tuple(clusters), tuple(assignments),
                        frozenset(d for p in parts.values() for d in p.diagnostics), parts,
                        {a.cluster: i for i, a in enumerate(assignments)},
                        any(p.failed for p in parts.values()))


def _patch_services(ctx: Context, _: None, old: ServicesPart,
                    changes: Changes) -> ServicesPart | None:
    """Only some Services' load assignments moved: replace them where they stand."""
    if changes.reads or any(name != SERVICE.name for name, _ in changes.queries):
        return None
    assignments = list(old.load_assignments)
    parts = dict(old.parts)
    for _name, key in changes.queries:
        assert isinstance(key, tuple)
        before, after = old.parts[key], ctx.query(SERVICE, key)
        if (after.clusters != before.clusters or after.diagnostics != before.diagnostics
                or after.failed or before.failed
                or [a.cluster for a in after.load_assignments]
                != [a.cluster for a in before.load_assignments]):
            return None
        for assignment in after.load_assignments:
            assignments[old.positions[assignment.cluster]] = assignment
        parts[key] = after
    return dataclasses.replace(old, load_assignments=tuple(assignments), parts=parts)


SERVICES: Query[None, ServicesPart] = Query("services", _services, _patch_services)


def _own_names(ctx: Context, key: Key) -> frozenset[str]:
    service = ctx.state.services.get(key)
    if service is None:
        return frozenset()
    # A failure here fails the Service's own translation too (:data:`SERVICE`
    # reports it): routes to it answer 503 as to an unresolvable backend.
    return guarded(service.meta.ref, lambda: cluster_names(service), lambda _: frozenset())


OWN_NAMES: Query[Key, frozenset[str]] = Query("own-cluster-names", _own_names)


@dataclass(frozen=True, slots=True)
class Contested:
    """Cluster names that two Services produce, each with the oldest of them (it keeps it)."""

    owners: Mapping[str, Key]
    diagnostics: tuple[Diagnostic, ...]


def _contested(ctx: Context, _: None) -> Contested:
    """Names are made to be distinct (DNS names cannot hold the ``/`` between their
    parts), but two Services producing one cluster name must never have one route
    reach the other's endpoints: the older Service keeps the name, the younger is
    reported (``Conflict``) and routes to it answer 503. Usually empty, so the
    Services' :data:`CLUSTER_NAMES` are not asked again when it runs."""
    first: dict[str, Key] = {}
    owners: dict[str, Key] = {}
    problems: list[Diagnostic] = []
    services = ctx.state.services
    for key in sorted(services, key=lambda k: _age(services[k])):
        own: frozenset[str] = ctx.query(OWN_NAMES, key)
        for name in sorted(own):
            holder = first.setdefault(name, key)
            if holder != key:
                owners[name] = holder
                problems.append(Diagnostic(
                    services[key].meta.ref, "metadata.name", Reason.CONFLICT,
                    f"cluster name {name!r} is already used by Service {holder[0]}/{holder[1]}; "
                    "routes to this port answer 503"))
    return Contested(owners, tuple(problems))


CONTESTED: Query[None, Contested] = Query("contested-cluster-names", _contested)


def _age(service: Service) -> tuple[bool, str, str, str]:
    # Oldest first; objects without a timestamp (hand-written manifests) after the rest.
    ts = service.meta.creation_timestamp
    return (ts == "", ts, service.meta.namespace, service.meta.name)


def _cluster_names(ctx: Context, key: Key) -> frozenset[str]:
    own, owners = ctx.query(OWN_NAMES, key), ctx.query(CONTESTED, None).owners
    return frozenset(n for n in own if owners.get(n, key) == key) if owners else own


CLUSTER_NAMES: Query[Key, frozenset[str]] = Query("cluster-names", _cluster_names)


def _route_targets(ctx: Context, _: None) -> frozenset[Target]:
    """What the Ingress routes and the default backend forward to
    (:attr:`~kxds.translators.ingress_merge.MergedRoutes.backends`), and where their
    external auth checks go."""
    merged = ctx.query(ROUTES, None)
    if not _concerned_by(ctx, _EXTERNAL_AUTH_PASS):
        return merged.backends
    return merged.backends | auth_targets(merged.virtual_hosts)


ROUTE_TARGETS: Query[None, frozenset[Target]] = Query("route-targets", _route_targets)


def _passthrough(ctx: Context, key: Key) -> tuple[Target, ...]:
    ing = ctx.state.ingresses.get(key)
    if ing is None:
        return ()
    return tuple((svc, name) for svc, name in tls_plan.passthrough_targets(ctx.state, ing)
                 if name in ctx.query(CLUSTER_NAMES, svc))


PASSTHROUGH: Query[Key, tuple[Target, ...]] = Query("passthrough-targets", _passthrough)
"""The Service clusters one Ingress's passthrough chains forward to."""

PASSTHROUGHS: Query[None, frozenset[Target]] = Query(
    "all-passthrough-targets", lambda ctx, _: frozenset(
        t for key in ctx.query(OUR_KEYS, None) for t in ctx.query(PASSTHROUGH, key)))


GATEWAY_TARGETS: Query[None, frozenset[Target]] = Query(
    "gateway-targets", lambda ctx, _: frozenset(itertools.chain(
        ctx.query(GATEWAY_API, None).routes.backends,
        ctx.query(GATEWAY_API, None).l4.backends)))  # and TLS, TCP and UDP Routes'
"""The Service clusters the Gateway API routes forward to."""


def _referenced(ctx: Context, _: None) -> Mapping[Key, frozenset[str]]:
    """Service -> the names of its clusters that something routes to: an Ingress route
    (:data:`ROUTE_TARGETS`), a Gateway API route, or a passthrough chain. TLS twins
    copy a cluster that a route names. Its parts are queries of their own, so a
    change that leaves them equal (a path added to a Service already routed to)
    stops there."""
    routes: frozenset[Target] = ctx.query(ROUTE_TARGETS, None)
    gateway_api: frozenset[Target] = ctx.query(GATEWAY_TARGETS, None)
    passthrough: frozenset[Target] = ctx.query(PASSTHROUGHS, None)
    out: dict[Key, set[str]] = {}
    for key, name in itertools.chain(routes, gateway_api, passthrough):
        out.setdefault(key, set()).add(name)
    return {key: frozenset(names) for key, names in out.items()}


REFERENCED: Query[None, Mapping[Key, frozenset[str]]] = Query("referenced", _referenced,
                                                              firewall=True)
"""A firewall (:mod:`kxds.incremental`): every Service's :data:`WANTED` reads it, and
a change of routes seldom changes which clusters they name."""


def _wanted(ctx: Context, key: Key) -> frozenset[str]:
    # One entry per Service: when the routes move, only the Services whose share
    # changed are translated again (early cutoff on an equal set).
    return ctx.query(REFERENCED, None).get(key, frozenset())


WANTED: Query[Key, frozenset[str]] = Query("wanted", _wanted)


# --- Ingresses -----------------------------------------------------------------------

POLICIES: Query[None, PolicyIndex] = Query("policies", lambda ctx, _: PolicyIndex.of(ctx.state))


# The passes' names: the keys of :data:`CONCERNED`.
_TLS_PASS = "tls"
_HOST_NAMES_PASS = "host-names"
_SERVICE_UPSTREAM_PASS = "service-upstream"
_TRACING_PASS = "tracing"
_CLUSTER_OPTIONS_PASS = "cluster-options"
_EXTERNAL_AUTH_PASS = "external-auth"

_PASSES: Mapping[str, Callable[[Ingress], bool]] = {
    _TLS_PASS: tls.concerns, _HOST_NAMES_PASS: host_names.asks,
    _SERVICE_UPSTREAM_PASS: service_upstream.asks, _TRACING_PASS: tracing.asks}
"""The passes over our Ingresses, each with what tells the Ingresses it reads (few
carry the annotations they read; the others are left out of its input)."""


_CARRIED: Mapping[str, Callable[[Route], bool]] = {
    _CLUSTER_OPTIONS_PASS: asks_options, _EXTERNAL_AUTH_PASS: checks_externally}
"""The passes over every route, each with what tells the routes it acts on: only an
Ingress's routes carry these, so with no Ingress of ours having such a route, the pass
is skipped (a change of routes does not pay for a look at every route)."""


def _concerns(ctx: Context, key: Key) -> frozenset[str]:
    ing = ctx.state.ingresses.get(key)
    if ing is None:
        return frozenset()
    one = ctx.query(INGRESS, key)
    routes = [c.route for c in (*one.paths, *((one.default,) if one.default else ()))]
    routes += [p.route for p in one.canary[1]] if one.canary is not None else []
    return frozenset((*(name for name, reads in _PASSES.items() if reads(ing)),
                      *(name for name, acts in _CARRIED.items() if any(map(acts, routes)))))


CONCERNS: Query[Key, frozenset[str]] = Query("ingress-concerns", _concerns)
"""The passes of :data:`_PASSES` that read one Ingress, and those of :data:`_CARRIED`
that its routes ask for."""


def _all_concerned(ctx: Context, _: None) -> Mapping[str, tuple[Ingress, ...]]:
    ingresses = ctx.state.ingresses
    out: dict[str, list[Ingress]] = {name: [] for name in (*_PASSES, *_CARRIED)}
    for key in ctx.query(OUR_KEYS, None):
        for name in ctx.query(CONCERNS, key):
            out[name].append(ingresses[key])
    return {name: tuple(concerned) for name, concerned in out.items()}


ALL_CONCERNED: Query[None, Mapping[str, tuple[Ingress, ...]]] = Query(
    "all-concerned-ingresses", _all_concerned)
"""For each pass of :data:`_PASSES` and :data:`_CARRIED`, the Ingresses of ours it
concerns, oldest first: the same while an Ingress that concerns none changes (the
query of that Ingress's :data:`CONCERNS` stops the change there). One query for all
passes: each looks at every Ingress's entry when it runs."""

CONCERNED: Query[str, tuple[Ingress, ...]] = Query(
    "concerned-ingresses", lambda ctx, name: ctx.query(ALL_CONCERNED, None)[name])
"""Those of one pass: its readers run again only when they changed."""


def _concerned_by(ctx: Context, name: str) -> tuple[Ingress, ...]:
    """:data:`CONCERNED` of the pass ``name``, typed as the tuple it is: passed straight
    to a function, the query's value type (invariant) would be taken from the
    function's parameter (an ``Iterable``) and not match."""
    return ctx.query(CONCERNED, name)


def _ingress(ctx: Context, key: Key) -> ingress.IngressRoutes:
    def has_cluster(service: Key, name: str) -> bool:
        return name in ctx.query(CLUSTER_NAMES, service)

    ing = ctx.state.ingresses.get(key)
    if ing is None:  # gone since a view that used it was built
        return ingress.IngressRoutes(ref=ObjectRef("Ingress", *key), paths=(), default=None,
                                     diagnostics=())
    policies = ctx.query(POLICIES, None)
    return guarded(ing.meta.ref,
                   lambda: ingress.ingress_routes(ctx.state, ing, has_cluster, policies,
                                                  ctx.config.limit_status,
                                                  ctx.config.ignore_snippets),
                   lambda problem: ingress.failed_routes(ing, problem))


INGRESS: Query[Key, ingress.IngressRoutes] = Query("ingress", _ingress)


def _routes(ctx: Context, _: None) -> MergedRoutes:
    ones = [ctx.query(INGRESS, key) for key in ctx.query(OUR_KEYS, None)]
    previous = ctx.previous_value()
    return merge_routes(ones, previous if isinstance(previous, MergedRoutes) else None)


def _patch_routes(ctx: Context, _: None, old: MergedRoutes,
                  changes: Changes) -> MergedRoutes | None:
    """Only some Ingresses' routes changed (the same Ingresses, in the same order): put
    the new ones where the old stood and merge again what they name."""
    if (changes.reads or any(name != INGRESS.name for name, _ in changes.queries)
            or not told_apart(old)):
        return None
    ones = list(old.ones)
    changed = []
    for _name, key in changes.queries:
        assert isinstance(key, tuple)
        at = old.positions[ObjectRef("Ingress", *key)]
        ones[at] = ctx.query(INGRESS, key)
        changed.append(at)
    return merge_routes(ones, old, changed)


ROUTES: Query[None, MergedRoutes] = Query("routes", _routes, _patch_routes)


def _gateway_api(ctx: Context, _: None) -> GatewayApi:
    def has(key: Key, name: str) -> bool:
        return name in ctx.query(CLUSTER_NAMES, key)

    return translate_gateway_api(
        ctx.state, ctx.config, has, ctx.query(POLICIES, None), _concerned_by(ctx, _TLS_PASS),
        lambda key, crt, pem: ctx.query(CERTIFICATE, (key, crt, pem)))


GATEWAY_API: Query[None, GatewayApi] = Query("gateway-api", _gateway_api)
"""Gateways and HTTPRoutes of ours: routes per host, and their status."""


# --- TLS -----------------------------------------------------------------------------


def _certificate(ctx: Context, key: tuple[Key, bytes, bytes]) -> Inspected:
    # Keyed by the Secret and its bytes: an entry lives while a translation
    # uses it, so no key material outlives its Secret's last use.
    return inspect_key_pair(key[1], key[2])


CERTIFICATE: Query[tuple[Key, bytes, bytes], Inspected] = Query("certificate", _certificate)


# --- the view ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class EdgeView:
    """The edge translation, and what :func:`_patch_edge` needs to patch it."""

    translation: Translation
    services: ServicesPart
    plain_assignments: bool
    """Whether the IR's load assignments are exactly the Services' (TLS adds none)."""
    tls: tls.TlsMemo
    """What the next TLS pass may take from this one."""


def _edge(ctx: Context, _: None) -> EdgeView:
    state, config = ctx.state, ctx.config
    svc = ctx.query(SERVICES, None)
    listener = ctx.query(HTTP_LISTENER, None)
    merged = ctx.query(ROUTES, None)
    table = route_table(listener.route_table, merged)
    gateway_api = ctx.query(GATEWAY_API, None)
    default = merged.others.default
    defaults = frozenset((default.name,)) if default is not None else frozenset()
    table, joined = merge_into(table, gateway_api.routes, defaults)
    table, named = apply_host_names(table, _concerned_by(ctx, _HOST_NAMES_PASS))
    clusters = svc.clusters
    # The routes' own: DNS mirror targets, and external auth services reached by DNS.
    extra = (*merged.clusters, *(auth_clusters(table.virtual_hosts)
                                 if _concerned_by(ctx, _EXTERNAL_AUTH_PASS) else ()))
    if extra:
        clusters = tuple(sorted((*clusters, *extra), key=attrgetter("name")))
    if svc.failed:  # fail closed: routes to a Service left out answer 503
        table = ingress.unavailable_without(table, {c.name for c in clusters})
    base = IR(clusters=clusters, load_assignments=svc.load_assignments,
              listeners=(listener,), route_tables=(table,))
    last = ctx.previous_value()  # passed the checks below: what it shares is not checked again
    https_ports = ctx.query(HTTPS_PORTS, None)
    secured = tls.apply_tls(base, state, config, _concerned_by(ctx, _TLS_PASS), https_ports,
                            ctx.query(POLICIES, None),
                            lambda key, crt, pem: ctx.query(CERTIFICATE, (key, crt, pem)),
                            last.tls if isinstance(last, EdgeView) else None)
    tls_memo = secured.memo
    secured = gateway_https(secured, state, config, gateway_api, https_ports,
                            frozenset(c.name for c in clusters) if svc.failed else None)
    l4_ir, l4_diags = add_l4(secured.ir, gateway_api.l4, config)
    secured = dataclasses.replace(secured, ir=l4_ir)
    if _concerned_by(ctx, _CLUSTER_OPTIONS_PASS):
        secured = dataclasses.replace(secured, ir=apply_cluster_options(secured.ir))
    upstream_ir, upstream_diags = apply_service_upstream(
        secured.ir, state, _concerned_by(ctx, _SERVICE_UPSTREAM_PASS))
    secured = dataclasses.replace(secured, ir=upstream_ir)
    traced_ir, tracing_diags = apply_tracing(secured.ir, config, _concerned_by(ctx, _TRACING_PASS))
    secured = dataclasses.replace(secured, ir=traced_ir)
    problems = consistency_problems(secured.ir, last.translation.ir
                                    if isinstance(last, EdgeView) else None)
    if problems:
        raise TranslationBug("; ".join(problems))
    parse_problems, skipped = ctx.query(PARSE_PROBLEMS, None)
    translation = Translation(
        ir=secured.ir, bounds=secured.bounds, skipped=skipped,
        gateway_status=gateway_api.status,
        diagnostics=sorted_diagnostics(parse_problems, svc.diagnostics,
                                       ctx.query(CONTESTED, None).diagnostics,
                                       merged.diagnostics, secured.diagnostics,
                                       gateway_api.routes.diagnostics, joined,
                                       gateway_api.diagnostics, named, upstream_diags,
                                       tracing_diags, l4_diags))
    return EdgeView(translation, svc, secured.ir.load_assignments is svc.load_assignments,
                    tls_memo)


HTTP_LISTENER: Query[None, HttpListener] = Query(
    "http-listener", lambda ctx, _: ingress.http_listener(ctx.config))
"""The plain-HTTP listener: a query, so that it stays the very same object while the
config it reads does (the build then finds it by identity, not serializing it again)."""


def _patch_edge(ctx: Context, _: None, old: EdgeView, changes: Changes) -> EdgeView | None:
    """Only Services' load assignments moved (nothing else the view reads did): put the
    new ones in the last IR. Every name stays where it was, so it stays consistent."""
    if changes.reads or changes.queries != ((SERVICES.name, None),) or not old.plain_assignments:
        return None
    svc = ctx.query(SERVICES, None)
    if svc.clusters is not old.services.clusters or svc.diagnostics != old.services.diagnostics:
        return None
    ir = dataclasses.replace(old.translation.ir, load_assignments=svc.load_assignments)
    return dataclasses.replace(old, translation=dataclasses.replace(old.translation, ir=ir),
                               services=svc)


EDGE: Query[None, EdgeView] = Query("edge", _edge, _patch_edge)
