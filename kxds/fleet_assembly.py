"""A node's view put together from its class's template (:mod:`kxds.fleet`).

A node's view is the template's resources with the node's own local parts in
place (:mod:`kxds.translators.node_fleet`). :class:`Assembly` keeps, per node,
what its last view was put together from, so that a type whose base and own
resources did not change keeps the very mapping of the last view, and a type
without resources of the node's own is the template's very mapping: the
snapshot cache then tells them unchanged by identity. The comparisons of
templates and their views are here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kxds import ir
from kxds.envoy.build import build_listener, endpoint_resource, health_check_route_resource
from kxds.envoy.resource import LISTENER, Resource, Resources
from kxds.kube.models import Key
from kxds.translators.node_fleet import LocalPart, TemplateParts
from kxds.views import Built

ByType = dict[str, dict[str, Resource]]
"""Resources by type URL and name."""


@dataclass(slots=True)
class Assembly:
    """What one node's last view was put together from."""

    resources: dict[str, tuple[LocalPart, tuple[Resource, ...]]] = field(default_factory=dict)
    """Each local part in place, by name, and its resources."""
    base: Resources | None = None
    """The template's resources the view was last put together from."""
    by_type: ByType = field(default_factory=dict)
    """The resources of the local parts that differ from the template's, by type."""

    def same_parts_in_place(self, overrides: dict[str, LocalPart]) -> bool:
        """Whether ``overrides`` are the local parts the last view had in place."""
        return overrides == {n: v for n, (v, _) in self.resources.items()}

    def assemble(self, base: Resources, overrides: dict[str, LocalPart],
                 last: Resources | None) -> Resources | None:
        """``base`` with ``overrides`` in place; None when one has no place in it.
        ``last``: the node's last view (see :meth:`put_together`)."""
        kept: dict[str, tuple[LocalPart, tuple[Resource, ...]]] = {}
        by_type: ByType = {}
        for name, value in overrides.items():
            hit = self.resources.get(name)
            built = hit[1] if hit is not None and hit[0] == value else _resources(value)
            kept[name] = (value, built)
            for r in built:
                there = base.get(r.type_url, {}).get(r.name)
                if there is None:
                    return None
                if there.version != r.version:  # a health check's listener does not move
                    by_type.setdefault(r.type_url, {})[r.name] = r
        self.resources = kept
        return self.put_together(base, by_type, last)

    def put_together(self, base: Resources, by_type: ByType,
                     last: Resources | None) -> Resources:
        """``base`` with the node's own resources ``by_type`` in place.

        A type whose base and own resources are those of the node's ``last`` view
        keeps that view's mapping; a type without its own is the base's very mapping.
        """
        out: dict[str, Mapping[str, Resource]] = {}
        for t, mapping in base.items():
            mine_t = by_type.get(t)
            if not mine_t:
                out[t] = mapping
            elif (last is not None and self.base is not None and self.base.get(t) is mapping
                  and self.by_type.get(t) == mine_t):
                out[t] = last[t]
            else:
                out[t] = MappingProxyType({**mapping, **mine_t})
        self.by_type, self.base = by_type, base
        if last is not None and all(out[t] is last.get(t) for t in out):
            return last
        if not by_type:
            return base
        return MappingProxyType(out)


def keeping(last: Built | None, new: Built) -> Built:
    """``new``, with each type's mapping of ``last`` where it is equal (kept by identity)."""
    if last is None or last.resources is None or new.resources is None:
        return new
    old = last.resources
    out = {t: old[t] if t in old and (old[t] is m or old[t] == m) else m
           for t, m in new.resources.items()}
    return dataclasses.replace(new, resources=MappingProxyType(out))


def same_view(old: Built, new: Built) -> bool:
    """Whether ``new`` serves what ``old`` does (by identity where it can)."""
    a, b = old.resources, new.resources
    if a is None or b is None or old.diagnostics != new.diagnostics:
        return False
    return a.keys() == b.keys() and all(a[t] is b[t] or a[t] == b[t] for t in a)


def same_parts(a: TemplateParts, b: TemplateParts, key: Key) -> bool:
    """Whether Service ``key`` has the same local parts in both templates."""
    if a is b:
        return True
    ports = a.ports.get(key, ())
    return (ports == b.ports.get(key, ()) and a.health.get(key) == b.health.get(key)
            and (key in a.nonempty) == (key in b.nonempty)
            and all(a.template_values.get(p.cluster) == b.template_values.get(p.cluster)
                    for p in ports))


def _resources(value: LocalPart) -> tuple[Resource, ...]:
    if isinstance(value, ir.LoadAssignment):
        return (endpoint_resource(value),)
    body = build_listener(value).SerializeToString(deterministic=True)
    return (Resource.of(LISTENER, value.name, body, (value.ref,)),
            health_check_route_resource(value))
