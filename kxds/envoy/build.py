"""IR -> Envoy resources, serialized once.

:func:`build_resources` turns an IR into the five xDS resource maps the cache
serves. Building and serializing are the expensive part of a rebuild, and an
IR node that did not change gives the same bytes, so a caller that builds
again and again (the controller) passes a :class:`BuildCache`: a resource is
then built only for an IR node it has not seen. IR nodes are immutable
values, so the node itself is the whole input of its resource: a cache keyed
on it cannot go stale. Nodes reused by an incremental translation are found
by identity, without hashing them; equal nodes of other views (per-node
proxies share most clusters) are found by value.

A route table is assembled from the bytes of its virtual hosts, so one
changed host does not re-serialize the others.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Callable, Hashable, Mapping
from types import MappingProxyType
from typing import Any

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
    copied,
)


class SharedBuilds:
    """Resources built by any view, by value: views with equal IR nodes (per-node proxies
    share most clusters) serialize them once and serve the very same bytes.

    Owned by the caller (the controller), which calls :meth:`sweep` after
    building every view: what no build asked for since is dropped.
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, Hashable], object] = {}
        self._used: set[tuple[str, Hashable]] = set()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, space: str, node: Hashable, build: Callable[[Any], object]) -> object:
        key = (space, node)
        value = self._values.get(key)
        if value is None:
            value = self._values[key] = build(node)
        self._used.add(key)
        return value

    def sweep(self) -> None:
        """Forget everything no build asked for since the last sweep."""
        self._values = {k: v for k, v in self._values.items() if k in self._used}
        self._used = set()


class BuildCache:
    """One view's resources from its last build, found again by the identity of IR nodes.

    A view is built again and again from IR that an incremental translation
    mostly reuses (the very same node objects): those nodes' resources are
    found by identity, without hashing them. Each build keeps exactly what it
    used, so memory follows the view. ``shared``: where to look (by value)
    before building a node this view has not seen.
    """

    def __init__(self, shared: SharedBuilds | None = None) -> None:
        self.shared = shared
        self._last: dict[str, dict[int, tuple[object, object]]] = {}
        self._now: dict[str, dict[int, tuple[object, object]]] = {}
        self.last: tuple[ir.IR, Resources] | None = None
        """The IR of the last build and its resources."""
        self._dns: tuple[tuple[ir.Cluster, ...], dict[str, ir.Cluster]] = ((), {})
        self._spliced: dict[str, _Spliced] = {}
        """Route table name -> what its last resource was spliced from."""

    def __len__(self) -> int:
        return sum(len(v) for v in self._last.values())

    def get(self, space: str, node: Hashable, build: Callable[[Any], object],
            by_value: bool = True) -> Any:
        """``build(node)``, or its value from the last build (this very node) or, with
        ``by_value``, from another view (an equal node)."""
        now = self._now.setdefault(space, {})
        hit = self._last.get(space, {}).get(id(node))
        if hit is not None and hit[0] is node:
            now[id(node)] = hit
            return hit[1]
        if by_value and self.shared is not None:
            value = self.shared.get(space, node, build)
        else:
            value = build(node)
        now[id(node)] = (node, value)
        return value

    def dns_clusters(self, clusters: tuple[ir.Cluster, ...]) -> dict[str, ir.Cluster]:
        """The clusters that are not EDS, by name (looked for again only when
        ``clusters`` is another tuple than last time: an endpoint change keeps it)."""
        if self._dns[0] is not clusters:
            self._dns = (clusters, {c.name: c for c in clusters
                                    if c.kind is not ir.ClusterKind.EDS})
        return self._dns[1]

    def spliced(self, table: ir.RouteTable) -> Resource:
        """``table``'s resource: the last one when this is the very same table, else
        spliced from its virtual hosts' fields, taking those of the last table of its
        name where the very same virtual host stands: when only some changed in place
        (found at C speed), time in proportion to them, not to the table. Found by
        identity only: hashing a large table to find an equal one would cost about
        what splicing its hosts' bytes does."""
        last = self._spliced.get(table.name)
        if last is not None and last.table is table:
            return last.resource
        vhosts = table.virtual_hosts
        if last is not None and len(last.table.virtual_hosts) == len(vhosts):
            hosts = list(last.hosts)
            moved = itertools.compress(range(len(vhosts)),
                                       map(operator.is_not, vhosts, last.table.virtual_hosts))
            same_refs = True
            for i in moved:
                hosts[i] = _encoded_host(vhosts[i])
                same_refs = same_refs and hosts[i][1].keys() == last.hosts[i][1].keys()
            refs = last.refs if same_refs else None
        else:
            known = (dict(zip(map(id, last.table.virtual_hosts), last.hosts, strict=True))
                     if last else {})
            hosts = [known.get(id(vh)) or _encoded_host(vh) for vh in vhosts]
            refs = None
        if refs is None:
            refs = _all_refs(hosts)
        resource = spliced_route_resource(table, hosts, refs)
        self._spliced[table.name] = _Spliced(table, hosts, refs, resource)
        return resource

    def kept_tables(self, tables: tuple[ir.RouteTable, ...]) -> None:
        """Forget the route tables not in ``tables`` (what they were spliced from)."""
        self._spliced = {t.name: self._spliced[t.name] for t in tables
                         if t.name in self._spliced}

    def rebuilding(self, *spaces: str) -> None:
        """These spaces are built again in full this time: what the build does not ask
        for in them is dropped at :meth:`finish` (even when it asks for nothing)."""
        for space in spaces:
            self._now.setdefault(space, {})

    def finish(self, model: ir.IR, resources: Resources) -> None:
        """End a build: keep what it used (a space it did not visit stays as it was)."""
        self._last.update(self._now)
        self._now = {}
        self.last = (model, resources)


def _cluster(cluster: ir.Cluster) -> Resource:
    body = clusters.build_cluster(cluster, None).SerializeToString(deterministic=True)
    return Resource.of(CLUSTER, cluster.name, body, (cluster.ref,))


def _dns_cluster(pair: tuple[ir.Cluster, ir.LoadAssignment | None]) -> Resource:
    """A STRICT_DNS cluster carries its (few, named) hosts inline."""
    cluster, assignment = pair
    body = clusters.build_cluster(cluster, assignment).SerializeToString(deterministic=True)
    return Resource.of(CLUSTER, cluster.name, body, (cluster.ref,))


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


def _listener(listener: ir.Listener) -> Resource:
    body = build_listener(listener).SerializeToString(deterministic=True)
    return Resource.of(LISTENER, listener.name, body, _listener_refs(listener))


def health_check_route_resource(listener: ir.HealthCheckListener) -> Resource:
    """The serialized ``RouteConfiguration`` a health-check listener fetches (its answer)."""
    body = l4.health_check_routes(listener).SerializeToString(deterministic=True)
    return Resource.of(ROUTE, listener.name, body, (listener.ref,))


def _secret(secret: ir.Secret) -> Resource:
    body = secrets.build_secret(secret).SerializeToString(deterministic=True)
    return Resource.of(SECRET, secret.name, body, (secret.ref,))


_VIRTUAL_HOSTS_TAG = b"\x12"
"""``RouteConfiguration.virtual_hosts`` (field 2, length-delimited) on the wire."""


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


_RefKey = tuple[str, str, str]


def _encoded_host(vhost: ir.VirtualHost) -> tuple[bytes, dict[_RefKey, ObjectRef]]:
    """A virtual host's encoded field and the objects it came from (each once): what a
    route table takes from it, kept per virtual host (see :meth:`BuildCache.spliced`)."""
    refs = {(r.kind, r.namespace, r.name): r
            for r in itertools.chain(vhost.refs, (route.ref for route in vhost.routes))}
    return encode_virtual_host(vhost), refs


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclasses.dataclass(frozen=True, slots=True)
class _Spliced:
    """A route table's resource and what it was spliced from (see :meth:`BuildCache.spliced`)."""

    table: ir.RouteTable
    hosts: list[tuple[bytes, dict[_RefKey, ObjectRef]]]
    """Each virtual host's encoded field and refs, in order."""
    refs: tuple[ObjectRef, ...]
    """All their refs, each once, sorted."""
    resource: Resource


def spliced_route_resource(table: ir.RouteTable,
                           hosts: list[tuple[bytes, dict[_RefKey, ObjectRef]]],
                           refs: tuple[ObjectRef, ...] | None = None) -> Resource:
    """The route table's resource from its virtual hosts' encoded fields and refs (in order);
    ``refs``: all of theirs (each once, sorted) when the caller knows them."""
    empty = dataclasses.replace(table, virtual_hosts=())
    rest = routes.build_route_table(empty)
    name = rest.name
    rest.ClearField("name")
    head = route_pb2.RouteConfiguration(name=name).SerializeToString(deterministic=True)
    body = b"".join(itertools.chain((head,), map(operator.itemgetter(0), hosts),
                                    (rest.SerializeToString(deterministic=True),)))
    return Resource.of(ROUTE, table.name, body, refs if refs is not None else _all_refs(hosts))


def _all_refs(hosts: list[tuple[bytes, dict[_RefKey, ObjectRef]]]) -> tuple[ObjectRef, ...]:
    """Each ref of ``hosts`` once, sorted: keyed by plain tuples, which hash and compare in C."""
    refs: dict[_RefKey, ObjectRef] = {}
    for _, host_refs in hosts:
        refs.update(host_refs)
    return tuple(refs[k] for k in sorted(refs))


def build_resources(model: ir.IR, cache: BuildCache | None = None) -> Resources:
    """Every resource of ``model``: type URL -> name -> resource, names sorted.

    EDS clusters get their endpoints as separate resources; STRICT_DNS
    clusters carry theirs inline and get none. A health-check listener gets
    its answer as a route table of its own name. ``cache``: the view's last
    build (see :class:`BuildCache`); a kind whose IR tuple is the very same
    object as then gets the very same mapping (the xDS cache then knows it
    unchanged without looking). The result is the same with or without it.
    """
    view = cache if cache is not None else BuildCache()
    before, built = view.last if view.last is not None else (None, None)

    def same(*attrs: str) -> bool:
        return before is not None and all(getattr(before, a) is getattr(model, a)
                                          for a in attrs)

    dns = view.dns_clusters(model.clusters)
    assignments = ({a.cluster: a for a in model.load_assignments if a.cluster in dns}
                   if dns else {})
    out: dict[str, Mapping[str, Resource]] = {}
    if built is not None and same("clusters", *(("load_assignments",) if dns else ())):
        out[CLUSTER] = built[CLUSTER]
    else:
        view.rebuilding("cluster", "dns-cluster")
        out[CLUSTER] = _mapping([
            view.get("dns-cluster", (c, assignments.get(c.name)), _dns_cluster) if c.name in dns
            else view.get("cluster", c, _cluster) for c in model.clusters])
    if built is not None and same("load_assignments", "clusters"):
        out[ENDPOINT] = built[ENDPOINT]
    elif (patched := _patched_endpoints(before, model, built, dns)) is not None:
        out[ENDPOINT] = patched
    else:
        view.rebuilding("endpoint")
        out[ENDPOINT] = _mapping([view.get("endpoint", a, endpoint_resource)
                                  for a in model.load_assignments if a.cluster not in dns])
    if built is not None and same("listeners", "route_tables"):
        out[LISTENER], out[ROUTE] = built[LISTENER], built[ROUTE]
    else:
        view.rebuilding("listener", "health-check-route")
        out[LISTENER] = _mapping([view.get("listener", lis, _listener)
                                  for lis in model.listeners])
        out[ROUTE] = _mapping([*map(view.spliced, model.route_tables),
                               *(view.get("health-check-route", lis, health_check_route_resource)
                                 for lis in model.listeners
                                 if isinstance(lis, ir.HealthCheckListener))])
        view.kept_tables(model.route_tables)
    if built is not None and same("secrets"):
        out[SECRET] = built[SECRET]
    else:
        view.rebuilding("secret")
        out[SECRET] = _mapping([view.get("secret", s, _secret, by_value=False)
                                for s in model.secrets])
    resources = {t: out[t] for t in TYPE_ORDER}
    view.finish(model, resources)
    return resources


def _patched_endpoints(before: ir.IR | None, model: ir.IR, built: Resources | None,
                       dns: Mapping[str, ir.Cluster]) -> Mapping[str, Resource] | None:
    """The last build's endpoints with only the changed load assignments built again,
    when the clusters are the same and every assignment kept its name and place (an
    EndpointSlice change); None otherwise. Time in proportion to the change, not
    to the view: no lookup per unchanged assignment."""
    if (before is None or built is None or dns or before.clusters is not model.clusters
            or len(before.load_assignments) != len(model.load_assignments)):
        return None
    endpoints = copied(built[ENDPOINT])
    pairs = zip(model.load_assignments, before.load_assignments, strict=True)
    moved = map(operator.is_not, model.load_assignments, before.load_assignments)
    for new, old in itertools.compress(pairs, moved):  # the changed ones, found at C speed
        if new.cluster != old.cluster:
            return None
        endpoints[new.cluster] = endpoint_resource(new)
    return MappingProxyType(endpoints)


def _mapping(rs: list[Resource]) -> Mapping[str, Resource]:
    """Name -> resource, in name order (the IR lists each kind sorted by name already)."""
    if not all(a.name < b.name for a, b in itertools.pairwise(rs)):
        rs = sorted(rs, key=lambda r: r.name)
    return MappingProxyType({r.name: r for r in rs})
