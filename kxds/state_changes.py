"""What changed between two states: the reads that now give another object.

:func:`changed_reads` is how :meth:`kxds.incremental.Store.begin` finds the
entries a new state makes dirty, in time proportional to the change: sources
hand back the very same model object while a Kubernetes object is unchanged,
so objects are compared by identity. :func:`only_slices_changed` tells the
controller when a change is only a few EndpointSlices (built on the event loop).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any

from kxds.kube.models import ClusterState
from kxds.recording import CONFIG, STATE_FIELDS, WHOLE, Read

_MISSING = object()


def changed_reads(old: ClusterState, new: ClusterState, old_config: Any,
                  new_config: Any, fields: Iterable[str] = STATE_FIELDS) -> Iterator[Read]:
    """Every read that gives another object in ``new`` than in ``old``: of ``fields``
    only (in :data:`STATE_FIELDS` order: ``slices_by_service`` is told from the
    ``endpoint_slices`` before it), and of the config."""
    changed_slices: list[Hashable] = []
    for name, a, b in _moved_fields(old, new, fields):
        if name == "slices_by_service" and old.endpoint_slices is not new.endpoint_slices:
            yield from _changed_groups(old, new, changed_slices)
            continue
        if isinstance(a, tuple):
            yield (name, WHOLE)
            continue
        moved = changed_in_place(a, b)
        if moved is not None:
            keys = [key for key, x, y in moved if not _same_tuple(x, y)]
        else:
            keys = [key for key, value in b.items() if (before := a.get(key, _MISSING))
                    is not value and not _same_tuple(before, value)]
        if len(a) != len(b) - sum(1 for k in keys if k not in a):
            keys += [key for key in a.keys() - b.keys()]
        if name == "endpoint_slices":
            changed_slices = keys
        for key in keys:
            yield (name, key)
        if keys:
            yield (name, WHOLE)
    if old_config is not new_config:
        for f in dataclasses.fields(new_config):
            if getattr(old_config, f.name) != getattr(new_config, f.name):
                yield (CONFIG, f.name)


def only_slices_changed(old: ClusterState, new: ClusterState, limit: int) -> bool:
    """Whether ``new`` differs from ``old`` in at most ``limit`` EndpointSlices and in
    nothing else (an endpoint change), found at C speed: a mapping counts as unchanged
    when it holds the very same objects under the same keys in the same order (sources
    rebuild their mappings, but keep each unchanged object and its place). A false "no"
    only costs the caller its slower path. ``slices_by_service`` follows the slices, as
    in :func:`_changed_groups`."""
    for name, a, b in _moved_fields(old, new, STATE_FIELDS):
        if name == "slices_by_service" and old.endpoint_slices is not new.endpoint_slices:
            continue
        moved = None if isinstance(a, tuple) else changed_in_place(a, b)
        if moved is None or len(moved) > (limit if name == "endpoint_slices" else 0):
            return False
    return True


def _moved_fields(old: ClusterState, new: ClusterState, fields: Iterable[str]
                  ) -> Iterator[tuple[str, Any, Any]]:
    """``(name, old value, new value)`` of each of ``fields`` whose value in ``new`` is
    another object than in ``old``, but for a tuple (the problems) equal in both."""
    for name in fields:
        a, b = getattr(old, name), getattr(new, name)
        if a is not b and not (isinstance(a, tuple) and a == b):
            yield name, a, b


def changed_in_place(a: Mapping[Any, Any], b: Mapping[Any, Any]
                     ) -> list[tuple[Any, Any, Any]] | None:
    """``(key, old, new)`` for every key whose value is another object, when both
    mappings have the same keys in the same order; None when they do not. At C speed:
    this runs over every object of a kind."""
    if len(a) != len(b) or list(a) != list(b):
        return None  # (a list's comparison takes the very same key as equal at once)
    if all(map(operator.is_, a.values(), b.values())):
        return []  # the common case (most kinds did not change), told at less cost
    return list(itertools.compress(zip(a, a.values(), b.values(), strict=True),
                                   map(operator.is_not, a.values(), b.values())))


def _changed_groups(old: ClusterState, new: ClusterState,
                    slices: list[Hashable]) -> Iterator[Read]:
    """The changes of ``slices_by_service``: a view of ``endpoint_slices`` grouped by
    Service, new tuples in every state, so found from the changed slices (which
    :data:`STATE_FIELDS` lists before it) rather than by comparing every group.
    Sound for states built by :meth:`ClusterState.from_objects`, which makes both
    fields together; a state whose slices stayed the very same mapping is compared
    group by group instead."""
    services = set()
    for key in slices:
        for state in (old, new):
            found = state.endpoint_slices.get(key)  # type: ignore[call-overload]
            if found is not None:
                services.add((found.meta.namespace, found.service_name))
    for service in services:
        yield ("slices_by_service", service)
    if services:
        yield ("slices_by_service", WHOLE)


def _same_tuple(a: object, b: object) -> bool:
    """Two tuples of the very same objects (a group of EndpointSlices rebuilt unchanged)."""
    return (type(a) is tuple and type(b) is tuple and len(a) == len(b)
            and all(x is y for x, y in zip(a, b, strict=True)))

