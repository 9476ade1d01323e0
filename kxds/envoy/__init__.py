"""IR -> Envoy resources, serialized once.

:func:`build_resources` turns an IR into the five xDS resource maps the cache
serves. Building and serializing are the expensive part of a rebuild, and an
IR node that did not change gives the same bytes, so each resource is
memoized on its (frozen, hashable) IR node: after an EndpointSlice change only
the touched load assignments are built again.
"""

from __future__ import annotations

from functools import lru_cache

from google.protobuf.message import Message

from kxds import ir
from kxds.diagnostics import ObjectRef
from kxds.envoy import clusters, endpoints, l4, listeners, routes, secrets, tls
from kxds.envoy.resource import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    TYPE_ORDER,
    Resource,
    Resources,
)

CACHE_SIZE = 1 << 16
"""Memoized clusters and load assignments: enough for a large cluster's Service ports."""

LARGE_CACHE_SIZE = 64
"""Memoized route tables: few per view, but one can be large,
so only recent versions are kept."""


@lru_cache(maxsize=CACHE_SIZE)
def cluster_resource(cluster: ir.Cluster, assignment: ir.LoadAssignment | None) -> Resource:
    """The serialized ``Cluster``; ``assignment`` is inlined into STRICT_DNS clusters."""
    body = clusters.build_cluster(cluster, assignment).SerializeToString(deterministic=True)
    return Resource.of(CLUSTER, cluster.name, body, (cluster.ref,))


@lru_cache(maxsize=CACHE_SIZE)
def endpoint_resource(assignment: ir.LoadAssignment) -> Resource:
    """The serialized ``ClusterLoadAssignment`` of an EDS cluster."""
    body = endpoints.build_load_assignment(assignment).SerializeToString(deterministic=True)
    return Resource.of(ENDPOINT, assignment.cluster, body, (assignment.ref,))


def build_listener(listener: ir.Listener) -> Message:
    """The Envoy ``Listener`` message of any IR listener kind."""
    if isinstance(listener, ir.HttpListener):
        return listeners.build_http_listener(listener)
    if isinstance(listener, ir.TlsListener):
        return tls.build_tls_listener(listener)
    if isinstance(listener, ir.TcpListener):
        return l4.build_tcp_listener(listener)
    if isinstance(listener, ir.UdpListener):
        return l4.build_udp_listener(listener)
    return l4.build_health_check_listener(listener)


def _listener_refs(listener: ir.Listener) -> tuple[ObjectRef, ...]:
    if isinstance(listener, ir.TlsListener):
        return tuple(sorted({r for c in listener.chains for r in c.refs}))
    if isinstance(listener, ir.HttpListener):
        return ()
    return (listener.ref,)


@lru_cache(maxsize=CACHE_SIZE)
def listener_resource(listener: ir.Listener) -> Resource:
    """The serialized ``Listener``."""
    body = build_listener(listener).SerializeToString(deterministic=True)
    return Resource.of(LISTENER, listener.name, body, _listener_refs(listener))


@lru_cache(maxsize=LARGE_CACHE_SIZE)
def route_resource(table: ir.RouteTable) -> Resource:
    """The serialized ``RouteConfiguration``."""
    body = routes.build_route_table(table).SerializeToString(deterministic=True)
    refs = {r for vh in table.virtual_hosts for r in vh.refs}
    refs.update(route.ref for vh in table.virtual_hosts for route in vh.routes)
    return Resource.of(ROUTE, table.name, body, tuple(sorted(refs)))


@lru_cache(maxsize=4096)
def secret_resource(secret: ir.Secret) -> Resource:
    """The serialized SDS ``Secret``."""
    body = secrets.build_secret(secret).SerializeToString(deterministic=True)
    return Resource.of(SECRET, secret.name, body, (secret.ref,))


def build_resources(model: ir.IR) -> Resources:
    """Every resource of ``model``: type URL -> name -> resource, names sorted.

    EDS clusters get their endpoints as separate resources; STRICT_DNS
    clusters carry theirs inline and get none.
    """
    assignments = {a.cluster: a for a in model.load_assignments}
    dns = {c.name for c in model.clusters if c.kind is not ir.ClusterKind.EDS}
    out: dict[str, list[Resource]] = {t: [] for t in TYPE_ORDER}
    for c in model.clusters:
        out[CLUSTER].append(cluster_resource(c, assignments.get(c.name) if c.name in dns
                                             else None))
    out[ENDPOINT] = [endpoint_resource(a) for a in model.load_assignments if a.cluster not in dns]
    out[LISTENER] = [listener_resource(lis) for lis in model.listeners]
    out[ROUTE] = [route_resource(t) for t in model.route_tables]
    out[SECRET] = [secret_resource(s) for s in model.secrets]
    return {t: {r.name: r for r in sorted(rs, key=lambda r: r.name)} for t, rs in out.items()}
