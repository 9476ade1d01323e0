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

from kxds import ir
from kxds.incremental import Changes, Context, Query, Store
from kxds.kube.models import ClusterState, Key, Service
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.network_policy import PolicyIndex
from kxds.translators.node_join import Joined, ServiceShare, join, patched
from kxds.translators.node_service import EXPOSED_TYPES, NodeBuilder, add_guarded
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


def _served_services(ctx: Context, _: None) -> tuple[Key, ...]:
    """The Services a per-node proxy serves, oldest first (they win address conflicts).

    A query of its own: most Service churn is of ClusterIP Services, which no
    node serves; this list then stays the same and no node view is rebuilt. By
    key: a served Service changed (its nodePort moved) leaves it the same too, and
    the node view patches that Service's share into its last join.
    """
    served = sorted((svc for svc in ctx.state.services.values() if _served(svc)), key=_age)
    return tuple(svc.meta.key for svc in served)


SERVED: Query[None, tuple[Key, ...]] = Query("served-services", _served_services)


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


def _joined(ctx: Context, node: NodeInfo) -> Joined | None:
    shares = [(key, ctx.query(SERVICE_SHARE, (node, key))) for key in ctx.query(SERVED, None)]
    last = ctx.previous_value()
    return join(shares, last.ir if isinstance(last, Joined) else None)


def _rejoined(ctx: Context, node: NodeInfo, last: Joined | None,
              changes: Changes) -> Joined | None:
    """The last join with the shares that changed in place (None: join again), when
    only shares changed: the Services served, and their order, are the same."""
    if last is None or changes.reads or any(
            name != SERVICE_SHARE.name for name, _ in changes.queries):
        return None
    changed = {}
    for _, key in changes.queries:
        assert isinstance(key, tuple)
        if key[1] not in last.shares:
            return None
        changed[key[1]] = ctx.query(SERVICE_SHARE, key)
    return patched(last, changed)


JOINED: Query[NodeInfo, Joined | None] = Query("node-joined", _joined, update=_rejoined)
"""A node view's shares joined (None when two Services contend): a change of a few
shares patches the last join (:func:`~kxds.translators.node_join.patched`)."""


def _node_view(ctx: Context, node: NodeInfo) -> Translation:
    joined = ctx.query(JOINED, node)
    last = ctx.previous_value()
    previous = last.ir if isinstance(last, Translation) else None
    if joined is not None:
        result, diagnostics = joined.ir, joined.diagnostics
    else:
        # Two Services contend for an address, a cluster or a listener name: the
        # older one wins, which only translating them in order can tell.
        b = NodeBuilder(ctx.state, ctx.config, node, ctx.query(NODE_POLICIES, None))
        for key in ctx.query(SERVED, None):
            add_guarded(b, ctx.state.services[key])
        result = ir.IR(clusters=tuple(b.clusters[k] for k in sorted(b.clusters)),
                       load_assignments=tuple(b.assignments[k] for k in sorted(b.assignments)),
                       listeners=tuple(b.listeners[k] for k in sorted(b.listeners)))
        diagnostics = tuple(sorted(b.diagnostics))
    problems = ir.consistency_problems(result, previous)
    if problems:
        raise TranslationBug("; ".join(problems))
    return Translation(ir=result, diagnostics=diagnostics)


NODE: Query[NodeInfo, Translation] = Query("node", _node_view)
"""A per-node view; keyed by the node it is built for."""


def _served(svc: Service) -> bool:
    """Whether a per-node proxy serves ``svc`` (listeners on nodePorts, LB IPs, externalIPs)."""
    return svc.type != "ExternalName" and (svc.type in EXPOSED_TYPES or bool(svc.external_ips))


def _age(svc: Service) -> tuple[bool, str, str, str]:
    # Oldest first; objects without a timestamp (hand-written manifests) after the rest.
    ts = svc.meta.creation_timestamp
    return (ts == "", ts, svc.meta.namespace, svc.meta.name)
