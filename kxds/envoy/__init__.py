"""IR -> Envoy resources, serialized once.

:func:`build_resources` turns an IR into the five xDS resource maps the cache
serves. Building and serializing are the expensive part of a rebuild, and an
IR node that did not change gives the same bytes, so each resource is
memoized on its (frozen, hashable) IR node: after an EndpointSlice change only
the touched load assignments are built again. A caller that keeps a
:class:`~kxds.memo.TranslationMemo` per view (the controller) finds unchanged
nodes by identity instead, without hashing them, and a route table is
assembled from the bytes of its virtual hosts, so one changed host does not
re-serialize the others.

The by-value caches are process-wide (views that build equal nodes share the
bytes); :func:`trim_caches` empties them when they hold far more than the
resources being served, so memory follows the state when it shrinks.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable
from functools import lru_cache

from envoy.config.route.v3 import route_pb2
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
from kxds.memo import TranslationMemo

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


@lru_cache(maxsize=CACHE_SIZE)
def health_check_route_resource(listener: ir.HealthCheckListener) -> Resource:
    """The serialized ``RouteConfiguration`` a health-check listener fetches (its answer)."""
    body = l4.health_check_routes(listener).SerializeToString(deterministic=True)
    return Resource.of(ROUTE, listener.name, body, (listener.ref,))


@lru_cache(maxsize=LARGE_CACHE_SIZE)
def route_resource(table: ir.RouteTable) -> Resource:
    """The serialized ``RouteConfiguration``."""
    return spliced_route_resource(table, [virtual_host_field(v) for v in table.virtual_hosts])


_VIRTUAL_HOSTS_TAG = b"\x12"
"""``RouteConfiguration.virtual_hosts`` (field 2, length-delimited) on the wire."""


@lru_cache(maxsize=4096)
def virtual_host_field(vhost: ir.VirtualHost) -> bytes:
    """:func:`encode_virtual_host`, memoized by value for callers without a memo."""
    return encode_virtual_host(vhost)


def encode_virtual_host(vhost: ir.VirtualHost) -> bytes:
    """One ``virtual_hosts`` entry of a ``RouteConfiguration``, encoded as on the wire.

    A route table's bytes are its name, then these entries, then its other
    fields (all numbered above 2): exactly what deterministic serialization of
    the whole message writes (protobuf encoding guide: a message is the
    concatenation of its fields; repeated fields repeat the key). So a change
    to one virtual host re-serializes only that one.
    """
    body: bytes = routes.build_virtual_host(vhost).SerializeToString(deterministic=True)
    return _VIRTUAL_HOSTS_TAG + _varint(len(body)) + body


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def spliced_route_resource(table: ir.RouteTable, vhost_fields: list[bytes]) -> Resource:
    """The route table's resource from its virtual hosts' encoded fields (in order)."""
    empty = dataclasses.replace(table, virtual_hosts=())
    rest = routes.build_route_table(empty)
    name = rest.name
    rest.ClearField("name")
    head = route_pb2.RouteConfiguration(name=name).SerializeToString(deterministic=True)
    body = b"".join((head, *vhost_fields, rest.SerializeToString(deterministic=True)))
    # Each ref once, sorted: keyed by plain tuples, which hash and compare in C.
    refs = {(r.kind, r.namespace, r.name): r for vh in table.virtual_hosts
            for r in itertools.chain(vh.refs, (route.ref for route in vh.routes))}
    return Resource.of(ROUTE, table.name, body, tuple(refs[k] for k in sorted(refs)))


@lru_cache(maxsize=4096)
def secret_resource(secret: ir.Secret) -> Resource:
    """The serialized SDS ``Secret``."""
    body = secrets.build_secret(secret).SerializeToString(deterministic=True)
    return Resource.of(SECRET, secret.name, body, (secret.ref,))


def trim_caches(live: int) -> int:
    """Empty each by-value cache holding more than twice ``live`` entries (the
    resources of every view, counted by the caller) plus some slack; returns how
    many were emptied. Per-view memos keep what the next rebuild reuses."""
    emptied = 0
    for cache in (cluster_resource, endpoint_resource, listener_resource, route_resource,
                  health_check_route_resource, virtual_host_field, secret_resource):
        if cache.cache_info().currsize > 2 * live + TRIM_SLACK:
            cache.cache_clear()
            emptied += 1
    return emptied


TRIM_SLACK = 256
"""Entries a cache may hold beyond twice the live resources before it is emptied."""


def build_resources(model: ir.IR, memo: TranslationMemo | None = None) -> Resources:
    """Every resource of ``model``: type URL -> name -> resource, names sorted.

    EDS clusters get their endpoints as separate resources; STRICT_DNS
    clusters carry theirs inline and get none. A health-check listener gets
    its answer as a route table of its own name. ``memo``: resources of earlier
    calls, found by the identity of their IR node, so that an unchanged node
    (reused by an incremental translation) is not even hashed again; the
    result is the same without it.
    """
    assignments = {a.cluster: a for a in model.load_assignments}
    dns = {c.name for c in model.clusters if c.kind is not ir.ClusterKind.EDS}
    out: dict[str, list[Resource]] = {}
    each = _each(memo)
    out[CLUSTER] = each("cluster", ((c, assignments.get(c.name) if c.name in dns else None)
                                    for c in model.clusters), cluster_resource)
    out[ENDPOINT] = each("endpoint", ((a,) for a in model.load_assignments
                                      if a.cluster not in dns), endpoint_resource)
    out[LISTENER] = each("listener", ((lis,) for lis in model.listeners), listener_resource)
    out[ROUTE] = (each("route", ((t,) for t in model.route_tables), route_resource)
                  if memo is None else
                  memo.each("route", ((t,) for t in model.route_tables),
                            lambda t: _memo_route_resource(t, memo)))
    health = [lis for lis in model.listeners if isinstance(lis, ir.HealthCheckListener)]
    if health:
        out[ROUTE] = [*out[ROUTE], *each("health-check-route", ((lis,) for lis in health),
                                         health_check_route_resource)]
    out[SECRET] = each("secret", ((s,) for s in model.secrets), secret_resource)
    # The IR lists each kind sorted by name already: then no sort is needed.
    return {t: {r.name: r for r in _by_name(out[t])} for t in TYPE_ORDER}


def _memo_route_resource(table: ir.RouteTable, memo: TranslationMemo) -> Resource:
    """A changed route table: its unchanged virtual hosts (same IR objects) are reused."""
    # Not through the value-keyed lru cache: the memo holds exactly the current ones.
    fields = memo.each(f"virtual-hosts:{table.name}", ((v,) for v in table.virtual_hosts),
                       encode_virtual_host)
    return spliced_route_resource(table, fields)


def _by_name(rs: list[Resource]) -> list[Resource]:
    if all(a.name < b.name for a, b in itertools.pairwise(rs)):
        return rs
    return sorted(rs, key=lambda r: r.name)


def _each(memo: TranslationMemo | None
          ) -> Callable[[str, Iterable[tuple[object, ...]], Callable[..., Resource]],
                        list[Resource]]:
    """Build one resource per IR node, through ``memo`` when there is one."""
    if memo is not None:
        return memo.each
    return lambda _, inputs, build: [build(*args) for args in inputs]
