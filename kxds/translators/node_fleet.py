"""What per-node views share, and the little by which one node's view differs.

Every per-node proxy serves the same Services on the same ports: its view
depends on the node through its zone (endpoint priorities), its bind address
and whether it is set up for transparent source addresses, and through its
*name* only where ``externalTrafficPolicy: Local`` (or
``internalTrafficPolicy: Local``) keeps this node's endpoints: the load
assignment of a ``/local`` cluster and the count a health-check listener
answers (:mod:`kxds.translators.node_endpoints`).

So a fleet of nodes is translated once per *class* of nodes (the same zone,
bind address and set-up; :func:`node_class`), for a node of a name no
endpoint carries (:data:`SHARED_NAME`): the *template*, whose local parts are
empty. A node's view is the template with its *local parts* replaced, and a
node has local parts only for the Services with an endpoint on it
(:func:`endpoint_nodes`): a handful, whatever the size of the cluster. This
module says which parts those are and computes them; :mod:`kxds.fleet` keeps
them across rebuilds. ``translate_node(state, config, node)`` equals the
template with :func:`local_parts` applied (checked by tests).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from kxds import ir, names
from kxds.kube.models import ClusterState, Key, Service
from kxds.translators.config import NodeInfo
from kxds.translators.node_endpoints import ServiceSlices, local_endpoint_count, port_endpoints
from kxds.translators.node_join import item_name
from kxds.translators.translation import Translation

SHARED_NAME = "\x00shared"
"""The node name of a template: not a Kubernetes node name (no NUL in DNS names)."""

LocalPart = ir.LoadAssignment | ir.HealthCheckListener
"""An IR item that depends on the node's name."""

_Named = TypeVar("_Named", ir.LoadAssignment, ir.Listener)


def node_class(node: NodeInfo) -> NodeInfo:
    """The template node of ``node``'s class: the same but for the name."""
    return dataclasses.replace(node, name=SHARED_NAME)


@dataclass(frozen=True, slots=True)
class PortPart:
    """A ``/local`` cluster of one Service port in the template."""

    cluster: str
    port_index: int


@dataclass(frozen=True, slots=True)
class TemplateParts:
    """The local parts of a template, by Service: what a node may replace."""

    ports: dict[Key, tuple[PortPart, ...]]
    health: dict[Key, ir.HealthCheckListener]
    template_values: dict[str, LocalPart]
    """Name -> the template's own value of each part (empty endpoints, count 0)."""
    nonempty: frozenset[Key]
    """Services whose template parts are not empty (an endpoint's node name equal to
    :data:`SHARED_NAME`): every node computes those parts of its own."""
    services: frozenset[Key]
    """Every Service with a local part."""
    assignments: dict[str, ir.LoadAssignment]
    """Every load assignment of the template, by cluster name (where a Service's
    parts are looked up when :func:`patched_parts` looks at it again)."""


def template_parts(template: Translation, state: ClusterState) -> TemplateParts:
    """The local parts of ``template`` (the translation of a :func:`node_class` node)."""
    assignments = {a.cluster: a for a in template.ir.load_assignments}
    refs = {c.ref for c in template.ir.clusters}
    refs.update(lis.ref for lis in template.ir.listeners if isinstance(lis, ir.HealthCheckListener))
    keys = {svc.meta.ref: key for key, svc in state.services.items() if svc.meta.ref in refs}
    health = {keys[lis.ref]: lis for lis in template.ir.listeners
              if isinstance(lis, ir.HealthCheckListener)}
    parts = TemplateParts({}, health, {}, frozenset(), frozenset(), assignments)
    return _with_services(parts, state, keys.values())


def patched_parts(parts: TemplateParts, old: ir.IR, new: ir.IR, state: ClusterState,
                  changed: frozenset[Key]) -> tuple[TemplateParts, frozenset[Key]] | None:
    """:func:`template_parts` of ``new``, from ``parts``, those of ``old``, and the
    Services looked at again: those in ``changed`` (Services changed since ``parts``)
    and those whose load assignments or health-check listeners are other objects in
    ``new``; every other Service's parts are the same. One Service changed is looked
    at again alone, not the fleet's 1,000; as ``parts`` must stay as it was (node
    views are compared against it), its indexes are copied whole (at C speed) when
    that Service's parts moved, and its index of load assignments when one of them
    is another object. None when an assignment or listener was added, removed or
    renamed: then only :func:`template_parts` tells."""
    assignments = _moved(old.load_assignments, new.load_assignments)
    listeners = _moved(old.listeners, new.listeners)
    if assignments is None or listeners is None:
        return None
    if not (assignments or listeners or changed):
        return parts, frozenset()
    index = parts.assignments
    if assignments:
        index = {**index, **{a.cluster: a for a in assignments}}
    health = parts.health
    again = set(changed)
    again.update((a.ref.namespace, a.ref.name) for a in assignments)
    for lis in listeners:  # of the listeners, only health checks are local parts
        if isinstance(lis, ir.HealthCheckListener):
            again.add((lis.ref.namespace, lis.ref.name))
            health = health if health is not parts.health else dict(health)
            health[(lis.ref.namespace, lis.ref.name)] = lis
    kept = dataclasses.replace(parts, health=health, assignments=index)
    return _with_services(kept, state, again), frozenset(again)


def _moved(old: tuple[_Named, ...], new: tuple[_Named, ...]) -> list[_Named] | None:
    """The items of ``new`` that are other objects than ``old``'s at their place (found
    at C speed); None unless both hold the same names in the same order."""
    if old is new:
        return []
    if len(old) != len(new):
        return None
    pairs = itertools.compress(zip(old, new, strict=True), map(operator.is_not, old, new))
    out = []
    for a, b in pairs:
        if item_name(a) != item_name(b):
            return None
        out.append(b)
    return out


_ServiceParts = tuple[tuple[PortPart, ...], dict[str, LocalPart], bool,
                      ir.HealthCheckListener | None]
"""One Service's ports, values by name, emptiness and health-check listener."""


def _with_services(parts: TemplateParts, state: ClusterState,
                   keys: Iterable[Key]) -> TemplateParts:
    """``parts`` with the ports, values and emptiness of Services ``keys`` found again
    (from ``parts.assignments`` and ``parts.health``); ``parts`` itself when they are
    the same (a Service without local parts, a Local Service whose endpoints moved:
    the template's parts of it stay empty), else its indexes copied once."""
    moved = {key: (found, held) for key in keys
             if (found := _service_parts(parts, state, key)) != (held := _held_parts(parts, key))}
    if not moved:
        return parts
    ports, values, nonempty = dict(parts.ports), dict(parts.template_values), set(parts.nonempty)
    health = dict(parts.health)
    for key, ((key_ports, key_values, key_nonempty, lis), held) in moved.items():
        for name in held[1]:
            del values[name]
        ports.pop(key, None)
        nonempty.discard(key)
        if lis is None:
            health.pop(key, None)
        if key_ports:
            ports[key] = key_ports
        values.update(key_values)
        if key_nonempty:
            nonempty.add(key)
    return TemplateParts(ports, health, values, frozenset(nonempty),
                         frozenset(ports.keys() | health.keys()), parts.assignments)


def _service_parts(parts: TemplateParts, state: ClusterState, key: Key) -> _ServiceParts:
    """Service ``key``'s parts in the template, found again."""
    svc = state.services.get(key)
    if svc is None:  # not among the template's Services
        return (), {}, False, None
    lis = parts.health.get(key)
    values: dict[str, LocalPart] = {lis.name: lis} if lis is not None else {}
    nonempty = lis is not None and lis.local_endpoints > 0
    found = []
    for i, sp in enumerate(svc.ports):
        name = names.node_cluster(key[0], key[1], sp.port, sp.protocol, local=True)
        assignment = parts.assignments.get(name)
        if assignment is not None and assignment.ref == svc.meta.ref:
            found.append(PortPart(name, i))
            values[name] = assignment
            nonempty = nonempty or bool(assignment.endpoints)
    return tuple(found), values, nonempty, lis


def _held_parts(parts: TemplateParts, key: Key) -> _ServiceParts:
    """Service ``key``'s parts as ``parts`` holds them (its health-check listener
    maybe already replaced)."""
    held = parts.ports.get(key, ())
    lis = parts.health.get(key)
    wanted = [p.cluster for p in held] + ([lis.name] if lis is not None else [])
    values = {n: parts.template_values[n] for n in wanted if n in parts.template_values}
    return held, values, key in parts.nonempty, lis


def endpoint_nodes(state: ClusterState, key: Key) -> frozenset[str]:
    """The nodes with an endpoint of Service ``key`` (ready or not): the only nodes
    whose local parts of it may differ from the template's."""
    return frozenset(ep.node_name for sl in state.slices_by_service.get(key, ())
                     for ep in sl.endpoints if ep.node_name is not None)


def local_parts(state: ClusterState, parts: TemplateParts, key: Key,
                node: NodeInfo) -> dict[str, LocalPart]:
    """Service ``key``'s local parts for ``node``, by name (those of the template's
    names; a part equal to the template's is left out)."""
    svc: Service | None = state.services.get(key)
    if svc is None:
        return {}
    found = ServiceSlices(state, svc)
    out: dict[str, LocalPart] = {}
    for part in parts.ports.get(key, ()):
        sp = svc.ports[part.port_index]
        endpoints, _ = port_endpoints(found, svc, sp, node, local=True)
        value = ir.LoadAssignment(cluster=part.cluster, ref=svc.meta.ref, endpoints=endpoints)
        if value != parts.template_values[part.cluster]:
            out[part.cluster] = value
    health = parts.health.get(key)
    if health is not None:
        count = local_endpoint_count(found, node)
        if count != health.local_endpoints:
            out[health.name] = dataclasses.replace(health, local_endpoints=count)
    return out
