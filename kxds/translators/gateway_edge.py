"""Gateway API on the edge: the whole front-end's result, and how it joins the Ingress routes.

Ingress and Gateway API may route the same host on the edge HTTP listener.
Their routes share the host's virtual host, ordered by the same precedence
(Exact, then the longest prefix). When an HTTPRoute and an Ingress ask for
the very same path match on one host, **the Ingress wins** and the HTTPRoute's
route is reported as a ``Conflict``: adding an HTTPRoute never takes traffic
from a live Ingress path; a migration removes the Ingress path to hand it over.
An Ingress host's unmatched paths still reach the Ingress default backend
(after every route of the host, both front-ends'); a host only HTTPRoutes
serve answers 404 for them, as the Gateway API asks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from kxds import names
from kxds.diagnostics import Diagnostic, Reason
from kxds.ir import MatchKind, Route, RouteTable, VirtualHost
from kxds.kube.gateway_models import Gateway, GRPCRoute, HTTPRoute
from kxds.kube.models import ClusterState, Ingress, Key
from kxds.translators.backend_tls_policy import plan as backend_tls_plan
from kxds.translators.backend_tls_policy import policy_statuses
from kxds.translators.config import TranslateConfig
from kxds.translators.gateway import (
    ListenerPlan,
    class_status,
    our_classes,
    our_gateways,
    plan_listeners,
)
from kxds.translators.gateway_groups import edge_group_of
from kxds.translators.gateway_hosts import GatewayRoutes, collect
from kxds.translators.gateway_l4 import L4Result, sni_owners, translate_l4
from kxds.translators.gateway_routes import HasCluster, route_outcome
from kxds.translators.gateway_status import (
    Condition,
    GatewayApiStatus,
    GatewayStatus,
    ListenerStatus,
)
from kxds.translators.gateway_tls import (
    GatewayChain,
    Inspect,
    ingress_sni_names,
    resolve_certificates,
)
from kxds.translators.network_policy import PolicyIndex


@dataclass(frozen=True, slots=True, eq=False)
class GatewayApi:
    """The Gateway API front-end's routes and the status of every object of ours."""

    routes: GatewayRoutes
    status: GatewayApiStatus
    diagnostics: tuple[Diagnostic, ...] = ()
    """Problems of the Gateways themselves (listeners not served)."""
    chains: tuple[GatewayChain, ...] = ()
    """The HTTPS listeners served, each a terminated chain of the edge TLS listener."""
    bounds: frozenset[dt.datetime] = frozenset()
    """The validity bounds of the listeners' certificates (a rebuild is due at each)."""
    l4: L4Result = field(default_factory=L4Result)
    """TLS passthrough, TCP and UDP listeners and their Routes."""

    @property
    def http_ports(self) -> Mapping[int, Mapping[str, tuple[Route, ...]]]:
        """The routes of the HTTP listeners on ports of their own, per port and host."""
        return self.routes.by_port


def translate_gateway_api(state: ClusterState, config: TranslateConfig,
                          clusters: HasCluster, policies: PolicyIndex | None = None,
                          ingresses: tuple[Ingress, ...] = (), inspect: Inspect | None = None
                          ) -> GatewayApi:
    """Every Gateway and HTTPRoute of ours -> routes per host and status; a route to a
    Service carries its client-IP rules (NetworkPolicy) as an Ingress route does.

    ``ingresses``: the Ingresses of ours, whose TLS hosts win over HTTPS listeners of
    the same hostname; ``inspect``: how a certificate pair is inspected (cached by
    the caller)."""
    gateways = our_gateways(state)
    certs = resolve_certificates(state, gateways, config, inspect)
    # (Only a Gateway's listeners yield to them: without one, no Ingress is looked at.)
    sni = ingress_sni_names(ingresses, config) if gateways else frozenset()
    plans = [p if not state.gateways[p.gateway].addresses else _unaddressable(p)
             for p in plan_listeners(gateways, config, dict(certs.problems))]
    plans = [_sni_taken(p) if p.accepted and p.listener.protocol in ("HTTPS", "TLS")
             and not p.own_port and (p.listener.hostname or "") in sni else p for p in plans]
    by_gateway: dict[Key, list[ListenerPlan]] = {}
    for plan in plans:
        by_gateway.setdefault(plan.gateway, []).append(plan)
    both: list[HTTPRoute | GRPCRoute] = [*state.http_routes.values(),
                                         *state.grpc_routes.values()]
    routes = sorted(both, key=age_of_route)
    https = frozenset((p.gateway, p.listener.name) for p in plans
                      if p.accepted and p.listener.protocol == "HTTPS")
    http = {(p.gateway, p.listener.name): p.listener.hostname for p in plans
            if p.accepted and p.listener.protocol == "HTTP"}
    own_ports = {(p.gateway, p.listener.name): p.port for p in plans
                 if p.accepted and p.own_port and p.listener.protocol == "HTTP"}
    gw_routes = collect((route_outcome(state, r, by_gateway, clusters, i, policies)
                         for i, r in enumerate(routes)), https, http, own_ports)
    served = {(p.gateway, p.listener.name): p for p in plans}
    chains = tuple(GatewayChain(gateway=state.gateways[k[0]].meta.ref, listener=k[1],
                                hostname=served[k].listener.hostname,
                                certificate=certs.served[k], port=served[k].port,
                                by_host=gw_routes.https.get(k, {}))
                   for k in sorted(https))
    l4 = translate_l4(state, config, by_gateway, clusters, policies,
                      sni_owners(config.https_port, sni,
                                 ((c.port, c.hostname, c.gateway) for c in chains)),
                      certs.served)
    attached = dict(gw_routes.attached)
    for k, n in l4.attached.items():
        attached[k] = attached.get(k, 0) + n
    statuses = tuple(_gateway_status(gw, by_gateway.get(gw.meta.key, []), attached)
                     for gw in sorted(gateways, key=lambda g: g.meta.ref))
    classes = tuple(class_status(c, config) for c in sorted(our_classes(state).values(),
                                                     key=lambda c: c.meta.name))
    tls_policies = policy_statuses(state, {g.meta.key for g in gateways},
                                   backend_tls_plan(state).conditions)
    route_statuses = tuple(sorted((*gw_routes.statuses, *l4.statuses, *tls_policies),
                                  key=lambda s: s.ref))
    return GatewayApi(gw_routes, GatewayApiStatus(classes=classes, gateways=statuses,
                                                  routes=route_statuses),
                      (*_listener_problems(state, plans), *certs.diagnostics,
                       *l4.diagnostics), chains, certs.bounds, l4)


def _sni_taken(plan: ListenerPlan) -> ListenerPlan:
    """An HTTPS or TLS listener whose hostname an Ingress serves over TLS: the Ingress
    wins."""
    host = plan.listener.hostname
    why = (f"an Ingress serves TLS for {host} on the edge (an Ingress wins)" if host else
           "the edge's default certificate (--default-certificate) serves clients "
           "without a known SNI name (an Ingress wins)")
    conds = (Condition("Accepted", False, "HostnameConflict", why), *plan.conditions[1:],
             Condition("Conflicted", True, "HostnameConflict", why))
    return replace(plan, accepted=False, conditions=conds)


def _listener_problems(state: ClusterState, plans: list[ListenerPlan]) -> Iterable[Diagnostic]:
    """A diagnostic for each listener not served (its status says the same)."""
    for p in plans:
        if p.accepted:
            continue
        gw = state.gateways[p.gateway]
        index = gw.listeners.index(p.listener)
        why = next(c for c in p.conditions if not c.status)
        reason = Reason.CONFLICT if why.reason == "HostnameConflict" else Reason.UNSUPPORTED
        yield Diagnostic(gw.meta.ref, f"spec.listeners[{index}]", reason,
                         f"listener {p.listener.name} is not served: {why.reason}: {why.message}")


def age_of_route(route: HTTPRoute | GRPCRoute) -> tuple[bool, str, str, str, str]:
    """Oldest first (it wins precedence ties); no timestamp after the rest."""
    ts = route.meta.creation_timestamp
    return (ts == "", ts, route.meta.namespace, route.meta.name, route.meta.ref.kind)


def _unaddressable(plan: ListenerPlan) -> ListenerPlan:
    """A listener of a Gateway asking for addresses kxds cannot give: not accepted."""
    why = Condition("Accepted", False, "UnsupportedAddress",
                    "the Gateway asks for spec.addresses, which kxds cannot assign")
    return replace(plan, accepted=False, conditions=(why, *plan.conditions[1:]))


def _gateway_status(gw: Gateway, plans: list[ListenerPlan],
                    attached: Mapping[tuple[Key, str], int]) -> GatewayStatus:
    listeners = []
    for p in plans:
        programmed = (Condition("Programmed", True, "Programmed", "") if p.accepted
                      else Condition("Programmed", False, "Invalid",
                                     "the listener is not accepted"))
        conflicted = [c for c in p.conditions if c.type == "Conflicted"] or [
            Condition("Conflicted", False, "NoConflicts", "")]
        others = [c for c in p.conditions if c.type != "Conflicted"]
        listeners.append(ListenerStatus(
            name=p.listener.name, supported_kinds=p.supported_kinds,
            attached_routes=attached.get((p.gateway, p.listener.name), 0),
            conditions=(*others, programmed, *conflicted)))
    good = sum(p.accepted for p in plans)
    if gw.addresses:
        accepted = Condition("Accepted", False, "UnsupportedAddress",
                             "spec.addresses is not supported: kxds serves every Gateway on "
                             "the edge Envoys' own addresses")
    elif good == len(plans):
        accepted = Condition("Accepted", True, "Accepted", "")
    else:
        bad = ", ".join(p.listener.name for p in plans if not p.accepted)
        accepted = Condition("Accepted", good > 0, "ListenersNotValid",
                             f"listeners not accepted: {bad}")
    group = edge_group_of(gw)
    where = f"served by the edge Envoys of group {group}" if group else \
        "served by every edge Envoy"
    programmed = (Condition("Programmed", True, "Programmed", where)
                  if accepted.status and good else
                  Condition("Programmed", False, "Invalid", "no listener is served"))
    return GatewayStatus(ref=gw.meta.ref, generation=gw.meta.generation,
                         conditions=(accepted, programmed), listeners=tuple(listeners))


def merge_into(table: RouteTable, gw: GatewayRoutes, defaults: frozenset[str]
               ) -> tuple[RouteTable, tuple[Diagnostic, ...]]:
    """``table`` (the Ingress routes) with the HTTPRoutes' routes added per host.

    ``defaults``: the names of Ingress default-backend routes (they stay last).
    An HTTPRoute route whose match an Ingress route of the host already has is
    left out and reported (the Ingress wins).
    """
    if not gw.by_host:
        return table, ()
    hosts = {vh.name: vh for vh in table.virtual_hosts}
    diagnostics: list[Diagnostic] = []
    for host, routes in gw.by_host.items():
        name = names.virtual_host(host)
        old = hosts.get(name)
        if old is None:
            hosts[name] = VirtualHost(name=name, domains=(host or "*",), routes=routes,
                                      refs=tuple(sorted({r.ref for r in routes})))
            continue
        hosts[name] = _joined(old, routes, defaults, diagnostics)
    return (replace(table, virtual_hosts=tuple(hosts[k] for k in sorted(hosts))),
            tuple(diagnostics))


def _joined(vh: VirtualHost, routes: tuple[Route, ...], defaults: frozenset[str],
            diagnostics: list[Diagnostic]) -> VirtualHost:
    """An Ingress virtual host with HTTPRoute routes placed by precedence."""
    own = [r for r in vh.routes if r.below_wildcard_host is None and r.name not in defaults]
    tail = [r for r in vh.routes if r.below_wildcard_host is not None or r.name in defaults]
    taken = {(r.match, r.headers, r.query): r.ref for r in own}
    added: list[Route] = []
    for r in routes:
        owner = taken.get((r.match, r.headers, r.query))
        if owner is not None:
            diagnostics.append(Diagnostic(
                r.ref, "spec.rules", Reason.CONFLICT,
                f"host {vh.domains[0]!r} {r.match.kind.value} {r.match.path!r} is already "
                f"served by {owner} (an Ingress wins over an HTTPRoute); route {r.name} "
                "is not served"))
            continue
        added.append(r)
    # An HTTPRoute route with header or query conditions goes before the Ingress
    # routes of the same path, which would otherwise take all its requests.
    ordered = sorted([(0, i, r) for i, r in enumerate(own)] + [
        (-1 if r.headers or r.query else 1, i, r) for i, r in enumerate(added)],
                     key=lambda t: (_rank(t[2]), t[0], t[1]))
    merged = tuple(r for _, _, r in ordered) + tuple(tail)
    return replace(vh, routes=merged, refs=tuple(sorted({*vh.refs, *(r.ref for r in added)})))


def _rank(route: Route) -> tuple[int, int]:
    """Exact first, then prefixes longest first (both front-ends' rule)."""
    if route.match.kind is MatchKind.EXACT:
        return (0, 0)
    if route.match.kind is MatchKind.FULL_REGEX:
        return (0, 1)  # an HTTPRoute's regex: after the exact paths, before prefixes
    return (1, -len(route.match.path))
