"""The per-node proxy's IR: NodePort, LoadBalancer and externalIP listeners.

A per-node Envoy runs on every node (hostNetwork) and takes kube-proxy's place
for traffic entering the cluster from outside. For each Service port it gets:

- a listener on the ``nodePort`` at the node's bind address (NodePort and
  LoadBalancer Services);
- a listener on each ``status.loadBalancer.ingress[].ip`` at the Service port
  (LoadBalancer);
- a listener on each ``spec.externalIPs`` entry inside the allowed CIDRs (any type).

TCP ports become ``tcp_proxy`` listeners, UDP ports ``udp_proxy`` listeners,
both on one port number when a Service mixes them; SCTP is reported.

``externalTrafficPolicy: Local`` sends to this node's endpoints only (a cluster
of its own, ``ns/svc/port/local``, so the all-endpoints cluster keeps its
meaning everywhere else) and answers the ``healthCheckNodePort`` with 200 or
503 as kube-proxy does. Clients from ``--cluster-cidrs`` (pods, nodes) follow
``internalTrafficPolicy`` instead, as kube-proxy handles a pod's traffic to a
LoadBalancer IP or externalIP like ClusterIP traffic; see "Exposing Services
outside the cluster" in the README.

Client-IP rules (the Service's NetworkPolicy-derived access policy and
``loadBalancerSourceRanges``, :func:`kxds.translators.access.service_access`)
guard every listener of the Service, matched on the real peer address: the
network RBAC filter on TCP; on UDP, which has no RBAC filter, the ``udp_proxy``
matcher routes only the admitted source ranges and drops the rest.

Which source address the backend sees (``kxds.io/source-ip``): the client's
(``transparent``: Envoy connects from the client's address, as kube-proxy
delivers ``externalTrafficPolicy: Local`` traffic unchanged), the node's with
a PROXY protocol header (``proxy-protocol``), or the node's (``node``, as
kube-proxy's SNAT). ``Local`` Services default to ``transparent``, the others
to ``node``. Transparent needs a node set up for it (node metadata
``source_ip_mode: transparent``) and endpoints on this node only; wherever it
cannot be had the node's address is used and the Service gets a ``Fallback``
diagnostic that says why.

Two Services claiming one address and port: the older one (by
``creationTimestamp``, then namespace/name) keeps it; the other gets CONFLICT.

Each Service is translated on its own (:data:`SERVICE_SHARE`, a query), and a
node view joins the shares, so a change translates the Services it reaches;
only when two Services contend (an overlapping address, a cluster or listener
name) are they all translated in order, as the older must win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kxds import ir
from kxds.diagnostics import Diagnostic
from kxds.incremental import Context, Query, Store
from kxds.kube.models import ClusterState, Key, Service
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.network_policy import PolicyIndex
from kxds.translators.node_service import EXPOSED_TYPES, Claim, NodeBuilder, Slot, add_guarded
from kxds.translators.translation import Translation, TranslationBug


def translate_node(state: ClusterState, config: TranslateConfig, node: NodeInfo,
                   store: Store | None = None) -> Translation:
    """The IR of the proxy on ``node`` and the problems found on the way.

    ``store``: the node view's query store, kept by the caller across rebuilds
    (:mod:`kxds.incremental`); the result is the same without one.
    """
    store = store if store is not None else Store()
    ctx = store.begin(state, config)
    try:
        return ctx.query(NODE, node)
    finally:
        store.end()


def _served_services(ctx: Context, _: None) -> tuple[Service, ...]:
    """The Services a per-node proxy serves, oldest first (they win address conflicts).

    A query of its own: most Service churn is of ClusterIP Services, which no
    node serves; this list then stays the same and no node view is rebuilt.
    """
    return tuple(sorted((svc for svc in ctx.state.services.values() if _served(svc)), key=_age))


SERVED: Query[None, tuple[Service, ...]] = Query("served-services", _served_services)


@dataclass(frozen=True, slots=True)
class ServiceShare:
    """One Service's part of a node view, translated as if no other Service claimed
    anything: what :func:`_node_view` joins when no two Services contend."""

    clusters: tuple[ir.Cluster, ...]
    assignments: tuple[ir.LoadAssignment, ...]
    listeners: tuple[ir.Listener, ...]
    diagnostics: frozenset[Diagnostic]
    claims: tuple[tuple[tuple[int, str], str], ...]
    """The (port, protocol) and address of each place it took."""


NODE_POLICIES: Query[None, PolicyIndex] = Query("node-policies",
                                                lambda ctx, _: PolicyIndex.of(ctx.state))


def _service_share(ctx: Context, key: tuple[NodeInfo, Key]) -> ServiceShare:
    node, service = key
    svc = ctx.state.services.get(service)
    if svc is None:  # gone since a view that used it was built
        return ServiceShare((), (), (), frozenset(), ())
    b = NodeBuilder(ctx.state, ctx.config, node, ctx.query(NODE_POLICIES, None))
    add_guarded(b, svc)
    return ServiceShare(tuple(b.clusters.values()), tuple(b.assignments.values()),
                        tuple(b.listeners.values()), frozenset(b.diagnostics),
                        tuple((slot, claim.address) for slot, taken in b.claims.items()
                              for claim in taken.by_address.values()))


SERVICE_SHARE: Query[tuple[NodeInfo, Key], ServiceShare] = Query("node-service-share",
                                                                 _service_share)
"""One Service's share of one node's view: a change of one Service (or of its
EndpointSlices) translates that Service again, not every Service of the node."""


def _node_view(ctx: Context, node: NodeInfo) -> Translation:
    served = ctx.query(SERVED, None)
    shares = [ctx.query(SERVICE_SHARE, (node, svc.meta.key)) for svc in served]
    last = ctx.previous_value()
    previous = last.ir if isinstance(last, Translation) else None
    joined = _join(shares, previous)
    if joined is None:
        # Two Services contend for an address, a cluster or a listener name: the
        # older one wins, which only translating them in order can tell.
        b = NodeBuilder(ctx.state, ctx.config, node, ctx.query(NODE_POLICIES, None))
        for svc in served:
            add_guarded(b, svc)
        joined = (ir.IR(clusters=tuple(b.clusters[k] for k in sorted(b.clusters)),
                        load_assignments=tuple(b.assignments[k] for k in sorted(b.assignments)),
                        listeners=tuple(b.listeners[k] for k in sorted(b.listeners))),
                  b.diagnostics)
    result, diagnostics = joined
    problems = ir.consistency_problems(result, previous)
    if problems:
        raise TranslationBug("; ".join(problems))
    return Translation(ir=result, diagnostics=tuple(sorted(diagnostics)))


def _join(shares: list[ServiceShare], previous: ir.IR | None
          ) -> tuple[ir.IR, set[Diagnostic]] | None:
    """The node view of ``shares`` (oldest Service first), when no two of them claim an
    overlapping address or the same name; None otherwise. Each kind keeps the very
    tuple of ``previous`` when it holds the same objects (:func:`_same_or`)."""
    slots: dict[tuple[int, str], Slot] = {}
    clusters: dict[str, ir.Cluster] = {}
    assignments: dict[str, ir.LoadAssignment] = {}
    listeners: dict[str, ir.Listener] = {}
    diagnostics: set[Diagnostic] = set()
    for share in shares:
        for slot_key, address in share.claims:
            slot = slots.setdefault(slot_key, Slot())
            if slot.holder(address) is not None:
                return None
            slot.take(Claim(("", ""), address))
        for cluster in share.clusters:
            if clusters.setdefault(cluster.name, cluster) is not cluster:
                return None
        for assignment in share.assignments:
            if assignments.setdefault(assignment.cluster, assignment) is not assignment:
                return None
        for lis in share.listeners:
            if listeners.setdefault(lis.name, lis) is not lis:
                return None
        diagnostics |= share.diagnostics
    return ir.IR(
        clusters=_same_or(previous.clusters if previous else None,
                          [clusters[k] for k in sorted(clusters)]),
        load_assignments=_same_or(previous.load_assignments if previous else None,
                                  [assignments[k] for k in sorted(assignments)]),
        listeners=_same_or(previous.listeners if previous else None,
                           [listeners[k] for k in sorted(listeners)])), diagnostics


def _same_or(old: tuple[Any, ...] | None, new: list[Any]) -> tuple[Any, ...]:
    """``old`` when it holds the very objects of ``new``, or equal ones (a Service
    translated again gives equal clusters for every change but of its endpoints), so
    later stages tell it unchanged by identity; else ``new`` as a tuple. Compared at C
    speed: identical items are not looked into."""
    out = tuple(new)
    return old if old is not None and old == out else out


NODE: Query[NodeInfo, Translation] = Query("node", _node_view)
"""A per-node view; keyed by the node it is built for."""


def _served(svc: Service) -> bool:
    """Whether a per-node proxy serves ``svc`` (listeners on nodePorts, LB IPs, externalIPs)."""
    return svc.type != "ExternalName" and (svc.type in EXPOSED_TYPES or bool(svc.external_ips))


def _age(svc: Service) -> tuple[bool, str, str, str]:
    # Oldest first; objects without a timestamp (hand-written manifests) after the rest.
    ts = svc.meta.creation_timestamp
    return (ts == "", ts, svc.meta.namespace, svc.meta.name)
