"""Incremental rebuilds: results of pure per-object steps, reused across rebuilds.

A :class:`TranslationMemo` is a value the caller owns (the controller keeps
one per view for translation, and one for building resources) and passes to
:func:`kxds.translators.edge.translate` or :func:`kxds.envoy.build_resources`;
both stay pure functions of their arguments: with or without a memo they
return the same IR and the same resources. What the memo holds are the
results of pure steps (one Service's clusters, one Ingress's routes, one
virtual host, one serialized resource), keyed by the identity of
every object the step read plus the plain values (config fields) it read.

Identity is a sound key because :class:`~kxds.kube.models.ClusterState`
objects are immutable and the sources hand back the very same model object
while a Kubernetes object is unchanged; a changed object is a new model, so
every step that read it misses and runs again. The memo keeps a reference to
each key object, so an id cannot be reused by another object while its entry
lives.

Each translation is one generation: :meth:`TranslationMemo.sweep` drops every
entry the last translation did not use, so memory follows the current state
(deleted objects' results go with them).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class _Entry:
    generation: int
    objects: tuple[object, ...]
    """The key objects, held so their ids stay theirs while the entry lives."""
    value: object


@dataclass(slots=True)
class _Epoch:
    generation: int
    source: object
    """The mapping last compared: asked again for it in the same generation, no scan."""
    items: dict[Any, object]
    token: object


class TranslationMemo:
    """Memoized translation steps for one view (edge, or one node); not thread-safe.

    One translation at a time may use a memo: the controller runs them one
    after the other.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, Hashable, tuple[int, ...]], _Entry] = {}
        self._epochs: dict[str, _Epoch] = {}
        self._canonical: dict[tuple[str, Hashable], _Entry] = {}
        self._each: dict[str, dict[int, tuple[tuple[object, ...], tuple[int, ...], object]]] = {}
        self._generation = 0
        self.previous: object | None = None
        """The last translation as its translator recorded it, for shortcuts that
        patch it (:func:`kxds.translators.edge.translate` keeps its own record here)."""
        self.hits = 0
        """Steps answered from the memo (cumulative; for tests and profiling)."""
        self.misses = 0
        """Steps that ran (cumulative)."""

    def __len__(self) -> int:
        """Entries held (both kinds)."""
        return len(self._entries) + sum(len(d) for d in self._each.values())

    def start(self) -> None:
        """Begin a translation: entries used from now on survive the next :meth:`sweep`."""
        self._generation += 1

    def sweep(self) -> None:
        """Drop every entry (and epoch) the translation since :meth:`start` did not use."""
        gen = self._generation
        self._entries = {k: e for k, e in self._entries.items() if e.generation == gen}
        self._epochs = {k: e for k, e in self._epochs.items() if e.generation == gen}
        # A canonical value lives while it was given out in this generation or
        # a kept entry still holds it (a hit does not pass through canonical()).
        held = {id(e.value) for e in self._entries.values()}
        self._canonical = {k: e for k, e in self._canonical.items()
                           if e.generation == gen or id(e.value) in held}

    def get(self, space: str, objects: tuple[object, ...], values: Hashable,
            compute: Callable[..., T], *args: object) -> T:
        """``compute(*args)``, or its result from an earlier call with the same inputs.

        ``space`` names the step; ``objects`` are the model objects it reads
        (compared by identity, ``None`` allowed); ``values`` the hashable
        plain values it reads (compared by equality).
        """
        key = (space, values, tuple(map(id, objects)))
        entry = self._entries.get(key)
        if entry is not None:
            entry.generation = self._generation
            self.hits += 1
            return cast(T, entry.value)
        value = compute(*args)
        self.misses += 1
        self._entries[key] = _Entry(self._generation, objects, value)
        return value

    def canonical(self, space: str, key: Hashable, value: T) -> T:
        """``value``, or the equal value last given for ``key`` (kept while used).

        Makes a recomputed but unchanged result the same object as before, so
        steps keyed on it by identity still find their results.
        """
        old = self._canonical.get((space, key))
        if old is not None:
            prev = cast(T, old.value)
            if prev is value or prev == value:
                old.generation = self._generation
                return prev
        self._canonical[(space, key)] = _Entry(self._generation, (), value)
        return value

    def each(self, space: str, inputs: Iterable[tuple[object, ...]],
             compute: Callable[..., T]) -> list[T]:
        """``[compute(*args) for args in inputs]``, reusing the previous call's results.

        For steps run once per object of a collection (a Service, an IR node):
        ``args`` whose objects are all identical to the ``args`` of the same
        first object in the previous call of ``space`` reuse its result. Only
        this call's results are kept. Cheaper per item than :meth:`get`.
        """
        old = self._each.get(space, {})
        new: dict[int, tuple[tuple[object, ...], tuple[int, ...], object]] = {}
        out: list[T] = []
        for args in inputs:
            ids = tuple(map(id, args))  # held by ``args`` in the entry: cannot be reused
            hit = old.get(ids[0])
            if hit is None or hit[1] != ids:
                hit = (args, ids, compute(*args))
                self.misses += 1
            else:
                self.hits += 1
            new[ids[0]] = hit
            out.append(cast(T, hit[2]))
        self._each[space] = new
        return out

    def epoch(self, name: str, items: Mapping[K, object]) -> object:
        """A token that stays the same object while ``items`` maps the same keys to the
        same (identical) objects; a new token after any addition, change or removal.

        Lets a step that reads a whole collection (every Pod, say) key on one object.
        """
        old = self._epochs.get(name)
        if old is not None and old.source is items and old.generation == self._generation:
            return old.token
        if old is not None and len(old.items) == len(items) and all(
                old.items.get(k, _MISSING) is v for k, v in items.items()):
            old.generation = self._generation
            old.source = items
            return old.token
        token = object()
        self._epochs[name] = _Epoch(self._generation, items, dict(items), token)
        return token


_MISSING = object()
