"""The edge gateway's translation: ClusterState -> IR, as queries (:mod:`kxds.incremental`).

:func:`translate` gives the edge view's IR: a cluster (and load assignment)
per Service port, the Ingress routes on the HTTP listener, and TLS. It is
written as a few queries, each a pure function of what it reads, so that a
caller keeping a :class:`~kxds.incremental.Store` per view recomputes only
what a change reaches:

- :data:`SERVICE` per Service: its clusters and load assignments;
  :data:`SERVICES` all of them in name order;
- :data:`CLUSTER_NAMES` per Service: what a route to it may name (unchanged
  by endpoint churn, so routes do not depend on endpoints);
- :data:`POLICIES`: the NetworkPolicies indexed by namespace;
- :data:`INGRESS` per Ingress of our class: its routes;
  :data:`ROUTES` all of them merged into virtual hosts;
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
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from operator import attrgetter

from kxds.certs.check import Inspected, inspect_key_pair
from kxds.diagnostics import Diagnostic, ObjectRef
from kxds.incremental import Changes, Context, Query, Store
from kxds.ir import IR, Cluster, LoadAssignment, consistency_problems
from kxds.kube.ingress_class import our_ingresses
from kxds.kube.models import ClusterState, Ingress, Key
from kxds.translators import ingress, tls
from kxds.translators.config import TranslateConfig
from kxds.translators.network_policy import PolicyIndex
from kxds.translators.services import OneService, translate_service
from kxds.translators.translation import Translation, TranslationBug, sorted_diagnostics


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
    return translate_service(service, ctx.state.slices_by_service.get(key, ()))


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


def _services(ctx: Context, _: None) -> ServicesPart:
    parts = {key: ctx.query(SERVICE, key) for key in ctx.state.services}
    clusters = sorted((c for p in parts.values() for c in p.clusters), key=attrgetter("name"))
    assignments = sorted((a for p in parts.values() for a in p.load_assignments),
                         key=attrgetter("cluster"))
    return ServicesPart(tuple(clusters), tuple(assignments),
                        frozenset(d for p in parts.values() for d in p.diagnostics), parts,
                        {a.cluster: i for i, a in enumerate(assignments)})


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
                or [a.cluster for a in after.load_assignments]
                != [a.cluster for a in before.load_assignments]):
            return None
        for assignment in after.load_assignments:
            assignments[old.positions[assignment.cluster]] = assignment
        parts[key] = after
    return dataclasses.replace(old, load_assignments=tuple(assignments), parts=parts)


SERVICES: Query[None, ServicesPart] = Query("services", _services, _patch_services)


def _cluster_names(ctx: Context, key: Key) -> frozenset[str]:
    return frozenset(c.name for c in ctx.query(SERVICE, key).clusters)


CLUSTER_NAMES: Query[Key, frozenset[str]] = Query("cluster-names", _cluster_names)


# --- Ingresses -----------------------------------------------------------------------

POLICIES: Query[None, PolicyIndex] = Query("policies", lambda ctx, _: PolicyIndex.of(ctx.state))


def _ours(ctx: Context, _: None) -> tuple[Ingress, ...]:
    return tuple(our_ingresses(ctx.state, ctx.config.ingress_class))


OURS: Query[None, tuple[Ingress, ...]] = Query("our-ingresses", _ours)


def _ingress(ctx: Context, key: Key) -> ingress.IngressRoutes:
    def has_cluster(service: Key, name: str) -> bool:
        return name in ctx.query(CLUSTER_NAMES, service)

    ing = ctx.state.ingresses.get(key)
    if ing is None:  # gone since a view that used it was built
        return ingress.IngressRoutes(ref=ObjectRef("Ingress", *key), paths=(), default=None,
                                     diagnostics=())
    return ingress.ingress_routes(ctx.state, ing, has_cluster, ctx.query(POLICIES, None),
                                  ctx.config.limit_status)


INGRESS: Query[Key, ingress.IngressRoutes] = Query("ingress", _ingress)


def _routes(ctx: Context, _: None) -> ingress.MergedRoutes:
    ones = [ctx.query(INGRESS, ing.meta.key) for ing in ctx.query(OURS, None)]
    previous = ctx.previous_value()
    return ingress.merge_routes(ones, previous if isinstance(previous, ingress.MergedRoutes)
                                else None)


ROUTES: Query[None, ingress.MergedRoutes] = Query("routes", _routes)


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


def _edge(ctx: Context, _: None) -> EdgeView:
    state, config = ctx.state, ctx.config
    svc = ctx.query(SERVICES, None)
    listener = ingress.http_listener(config)
    merged = ctx.query(ROUTES, None)
    base = IR(clusters=svc.clusters, load_assignments=svc.load_assignments,
              listeners=(listener,),
              route_tables=(ingress.route_table(listener.route_table, merged),))
    ours = ctx.query(OURS, None)
    secured = tls.apply_tls(base, state, config, ours, ctx.query(POLICIES, None),
                            lambda key, crt, pem: ctx.query(CERTIFICATE, (key, crt, pem)))
    problems = consistency_problems(secured.ir)
    if problems:
        raise TranslationBug("; ".join(problems))
    translation = Translation(
        ir=secured.ir, bounds=secured.bounds,
        diagnostics=sorted_diagnostics(state.problems, svc.diagnostics,
                                       merged.diagnostics, secured.diagnostics))
    return EdgeView(translation, svc, secured.ir.load_assignments is svc.load_assignments)


def _patch_edge(ctx: Context, _: None, old: EdgeView, changes: Changes) -> EdgeView | None:
    """Only Services' load assignments moved (nothing else the view reads did): put the
    new ones in the last IR. Every name stays where it was, so it stays consistent."""
    if changes.reads or changes.queries != ((SERVICES.name, None),) or not old.plain_assignments:
        return None
    svc = ctx.query(SERVICES, None)
    if svc.clusters is not old.services.clusters or svc.diagnostics != old.services.diagnostics:
        return None
    ir = dataclasses.replace(old.translation.ir, load_assignments=svc.load_assignments)
    return EdgeView(dataclasses.replace(old.translation, ir=ir), svc, True)


EDGE: Query[None, EdgeView] = Query("edge", _edge, _patch_edge)


def validity_bounds(translation: Translation, now: dt.datetime) -> dt.datetime | None:
    """The first instant after ``now`` at which a certificate check of ``translation``
    may change its verdict (the caller rebuilds then); None when none will."""
    return min((b for b in translation.bounds if b >= now), default=None)
