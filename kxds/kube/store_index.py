"""The API source's ClusterState, kept current from the objects that changed.

:class:`~kxds.kube.store.Store` tells :meth:`StateIndex.update` which keys of
which slots changed since the last snapshot; the new state then costs what
changed, not the cluster: a kind nothing changed in keeps its very mapping
(the controller's diff, :mod:`kxds.state_changes`, passes it by identity), a
changed kind's mapping is copied once and patched, EndpointSlices are grouped
again only for the Services whose slices changed, and which Secrets and
ConfigMaps are kept (those something refers to) follows counts of the
references each referring object makes. The state equals
:meth:`ClusterState.from_objects` of every kept object (the tests check it).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType

from kxds.diagnostics import Diagnostic
from kxds.kube import models as m

Entry = tuple[m.Model | None, Diagnostic | None]
"""A parsed object, or why it failed (or both: its last good model and the problem)."""

Refs = tuple[frozenset[m.Key], frozenset[m.Key]]
"""The Secrets and the ConfigMaps one object refers to."""

_FIELD_OF_KIND = {cls.__name__: name for cls, name in m.FIELD_OF.items()}
_REFERRING = ("ingresses", "gateways", "backendtlspolicies")
_KEPT_IF_REFERRED = {"secrets": 0, "configmaps": 1}
"""Kinds kept only when something refers to them: which of :data:`Refs` counts."""
_NO_REFS: Refs = (frozenset(), frozenset())


def plural_of(slot: str) -> str:
    """The resource a store slot holds (``secrets#opaque@ns`` holds ``secrets``)."""
    return slot.partition("@")[0].partition("#")[0]


class StateIndex:
    """The last snapshot's state and what it takes to patch it; one per store.

    ``slots`` maps each slot to the kind it holds (``"Service"``), in the
    store's order: when two slots hold an object under one key, the later wins.
    """

    def __init__(self, slots: Mapping[str, str], extra_secrets: Iterable[m.Key]) -> None:
        self._field = {slot: _FIELD_OF_KIND[kind] for slot, kind in slots.items()}
        self._plural = {slot: plural_of(slot) for slot in slots}
        self._slots_of: dict[str, list[str]] = {}
        for slot, name in self._field.items():
            self._slots_of.setdefault(name, []).append(slot)
        self._maps: dict[str, dict[m.Key, m.Model]] = {n: {} for n in m.FIELD_OF.values()}
        self._groups: dict[m.Key, tuple[m.EndpointSlice, ...]] = {}
        self._problems: dict[tuple[str, m.Key], Diagnostic] = {}
        self._refs: dict[tuple[str, m.Key], Refs] = {}
        self._counts: tuple[Counter[m.Key], Counter[m.Key]] = (Counter(extra_secrets), Counter())
        self.state = m.ClusterState()

    def update(self, entries: Mapping[str, Mapping[m.Key, Entry]],
               changed: Mapping[str, Collection[m.Key]]) -> m.ClusterState:
        """The state once the ``changed`` keys of each slot hold what ``entries`` has
        (a key absent from ``entries[slot]`` was deleted)."""
        todo = {slot: set(keys) for slot, keys in changed.items() if keys}
        for slot, keys in list(todo.items()):
            if self._plural[slot] in _REFERRING:
                for key in keys:
                    self._count_refs(entries, slot, key, todo)
        patched: dict[str, dict[m.Key, m.Model]] = {}  # copied on their first change
        groups: dict[m.Key, tuple[m.EndpointSlice, ...]] | None = None
        problems = False
        for slot, keys in todo.items():
            name = self._field[slot]
            for key in keys:
                problems |= self._note_problem(entries, slot, key)
                old, new = patched.get(name, self._maps[name]).get(key), self._winner(
                    entries, name, key)
                if new is old:
                    continue
                by_key = patched.get(name)
                if by_key is None:
                    by_key = patched[name] = dict(self._maps[name])
                if new is None:
                    del by_key[key]
                else:
                    by_key[key] = new
                if name == "endpoint_slices":
                    groups = dict(self._groups) if groups is None else groups
                    _move_slice(groups, key, old, new)
        self._maps.update(patched)
        changes: dict[str, object] = {n: MappingProxyType(by_key) for n, by_key in patched.items()}
        if groups is not None:
            self._groups = groups
            changes["slices_by_service"] = MappingProxyType(groups)
        if problems:
            changes["problems"] = tuple(sorted(set(self._problems.values())))
        if changes:
            self.state = dataclasses.replace(self.state, **changes)  # type: ignore[arg-type]
        return self.state

    def _kept(self, slot: str, key: m.Key) -> bool:
        """Whether an object of ``slot`` under ``key`` enters the state at all."""
        which = _KEPT_IF_REFERRED.get(self._plural[slot])
        return which is None or self._counts[which][key] > 0

    def _winner(self, entries: Mapping[str, Mapping[m.Key, Entry]], name: str,
                key: m.Key) -> m.Model | None:
        """The model the state holds under ``key`` for field ``name``: the last slot's."""
        found = None
        for slot in self._slots_of[name]:
            entry = entries[slot].get(key)
            if entry is not None and entry[0] is not None and self._kept(slot, key):
                found = entry[0]
        return found

    def _note_problem(self, entries: Mapping[str, Mapping[m.Key, Entry]], slot: str,
                      key: m.Key) -> bool:
        """Record the problem of ``key`` in ``slot``; whether it changed."""
        entry = entries[slot].get(key)
        problem = entry[1] if entry is not None and self._kept(slot, key) else None
        old = self._problems.get((slot, key))
        if problem == old:
            return False
        if problem is None:
            del self._problems[(slot, key)]
        else:
            self._problems[(slot, key)] = problem
        return True

    def _count_refs(self, entries: Mapping[str, Mapping[m.Key, Entry]], slot: str,
                    key: m.Key, todo: dict[str, set[m.Key]]) -> None:
        """Count the references the object now makes instead of those it made; a
        Secret or ConfigMap now referred to, or no longer, is looked at again."""
        entry = entries[slot].get(key)
        new = _refs_of(entry[0]) if entry is not None else _NO_REFS
        old = self._refs.pop((slot, key), _NO_REFS)
        if new != _NO_REFS:
            self._refs[(slot, key)] = new
        for which, plural in ((0, "secrets"), (1, "configmaps")):
            counts = self._counts[which]
            for ref in old[which] - new[which]:
                counts[ref] -= 1
                if not counts[ref]:
                    del counts[ref]
                    self._look_again(plural, ref, todo)
            for ref in new[which] - old[which]:
                counts[ref] += 1
                if counts[ref] == 1:
                    self._look_again(plural, ref, todo)

    def _look_again(self, plural: str, key: m.Key, todo: dict[str, set[m.Key]]) -> None:
        for slot, p in self._plural.items():
            if p == plural:
                todo.setdefault(slot, set()).add(key)


def _move_slice(groups: dict[m.Key, tuple[m.EndpointSlice, ...]], key: m.Key,
                old: m.Model | None, new: m.Model | None) -> None:
    """Take the slice ``key`` out of its old Service's group and put it in its new one's
    (a group is replaced in place, not removed and added: a mapping copied without
    holes is copied at C speed)."""
    moved: dict[m.Key, list[m.EndpointSlice]] = {}
    for model in (old, new):
        if isinstance(model, m.EndpointSlice):
            service = (model.meta.namespace, model.service_name)
            rest = moved.get(service)
            if rest is None:
                rest = moved[service] = [s for s in groups.get(service, ())
                                         if s.meta.key != key]
            if model is new:
                rest.append(model)
    for service, rest in moved.items():
        if rest:
            groups[service] = m.slices_in_order(rest)
        else:
            groups.pop(service, None)


def _names_in_annotations(ing: m.Ingress) -> Iterable[m.Key]:
    """Secrets named by annotations such as ``kxds.io/client-ca-secret: [ns/]name``."""
    for key, value in ing.meta.annotations.items():
        if "secret" in key.rsplit("/", 1)[-1].lower():
            for ref in value.split(","):
                ns, _, name = ref.strip().rpartition("/")
                if name:
                    yield (ns or ing.meta.namespace, name)


def referenced_secrets(ingresses: Iterable[m.Ingress], extra: Iterable[m.Key],
                       gateways: Iterable[m.Gateway] = (),
                       policies: Iterable[m.BackendTLSPolicy] = ()) -> set[m.Key]:
    """Secrets an Ingress (of any class), a Gateway listener, a BackendTLSPolicy or the
    configuration refers to."""
    out = set(extra)
    for pol in policies:
        out.update((pol.meta.namespace, ref.name) for ref in pol.ca_refs
                   if ref.group == "" and ref.kind == "Secret")
    for gw in gateways:
        out.update((ref.namespace or gw.meta.namespace, ref.name) for lis in gw.listeners
                   if lis.tls is not None for ref in lis.tls.certificate_refs)
    for ing in ingresses:
        out.update((ing.meta.namespace, t.secret_name) for t in ing.tls if t.secret_name)
        out.update(_names_in_annotations(ing))
    return out


CONFIG_MAP_ANNOTATIONS = ("custom-headers", "auth-proxy-set-headers")
"""Annotations (short names, under either prefix) whose value names a ConfigMap."""


def referenced_config_maps(ingresses: Iterable[m.Ingress],
                           policies: Iterable[m.BackendTLSPolicy] = ()) -> set[m.Key]:
    """ConfigMaps an Ingress (of any class) names (``[namespace/]name``), and the CA
    bundles BackendTLSPolicies name."""
    out: set[m.Key] = {(p.meta.namespace, r.name) for p in policies for r in p.ca_refs
                       if r.group == "" and r.kind == "ConfigMap"}
    for ing in ingresses:
        for key, value in ing.meta.annotations.items():
            if key.rsplit("/", 1)[-1] in CONFIG_MAP_ANNOTATIONS:
                ns, _, name = value.strip().rpartition("/")
                if name:
                    out.add((ns or ing.meta.namespace, name))
    return out


def _refs_of(model: m.Model | None) -> Refs:
    if isinstance(model, m.Ingress):
        return frozenset(referenced_secrets([model], ())), frozenset(
            referenced_config_maps([model]))
    if isinstance(model, m.Gateway):
        return frozenset(referenced_secrets((), (), [model])), frozenset()
    if isinstance(model, m.BackendTLSPolicy):
        return (frozenset(referenced_secrets((), (), (), [model])),
                frozenset(referenced_config_maps((), [model])))
    return _NO_REFS
