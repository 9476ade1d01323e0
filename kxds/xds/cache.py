"""The snapshot cache: one versioned view of Envoy resources per group of proxies.

The controller calls :meth:`SnapshotCache.set_view` with a complete
:data:`~kxds.envoy.resource.Resources` mapping for a group (``edge/<cluster>``
or ``node/<node name>``). Streams of the xDS server watch their group and are
woken through an :class:`asyncio.Event`; the decision of *what* to send lives
in :mod:`kxds.xds.sotw` and :mod:`kxds.xds.delta`. Nothing here knows gRPC.

Resources are shared, never copied: the same :class:`Resource` object (and so
the same serialized bytes) may appear in many groups' views, and versions are
``Resource.version``, a content hash, so a restarted kxds computes the same
versions and a reconnecting Envoy is not re-sent what it already has.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kxds.envoy.resource import Resource, Resources, copied
from kxds.xds.identity import NodeIdentity
from kxds.xds.tracker import NodeTracker

log = logging.getLogger("kxds.xds.cache")



_SUM_MODULUS = 1 << 128


def _term(res: Resource) -> int:
    """One resource's part of its type's version: a hash of its name and version."""
    digest = hashlib.blake2b(f"{res.name}\0{res.version}".encode(), digest_size=16)
    return int.from_bytes(digest.digest())


def _version_of_sum(total: int) -> str:
    return hashlib.sha256(total.to_bytes(16)).hexdigest()[:16]


def type_version(resources: Iterable[Resource]) -> str:
    """The version of a set of resources: a hash of the sum of a hash of each one's name
    and version. A sum, so it ignores order and a view whose few resources changed gets
    its version from its predecessor's sum in proportion to the change (:class:`TypeMap`)."""
    return _version_of_sum(sum(map(_term, resources)) % _SUM_MODULUS)


@dataclass(frozen=True, slots=True)
class View:
    """One complete, immutable set of resources for a group, and when it was set."""

    resources: Mapping[str, TypeMap]
    seq: int
    """Increases with every ``set_view`` on the cache (any group)."""
    set_at: float
    """``time.monotonic()`` when it was set: the start of push latency."""
    versions: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    """Memo of :meth:`type_version` (shared by every stream of the group)."""

    def type_version(self, type_url: str) -> str:
        """The version of all resources of one type (computed once per view)."""
        version = self.versions.get(type_url)
        if version is None:
            version = self.versions[type_url] = self.of_type(type_url).content_version()
        return version

    def of_type(self, type_url: str) -> TypeMap:
        """The resources of one type (empty when the view has none)."""
        return self.resources.get(type_url, _EMPTY)

    def byte_size(self) -> int:
        """Total serialized size of the view's resources."""
        return sum(by_name.byte_size() for by_name in self.resources.values())

    def count(self) -> int:
        """Number of resources in the view."""
        return sum(len(by_name) for by_name in self.resources.values())


class _Facts:
    """What is computed once about a type map's resources (shared by the maps of
    many groups handed the same mapping: see :class:`_SharedDiffs`)."""

    __slots__ = ("size", "total")

    def __init__(self) -> None:
        self.total: int | None = None
        """The sum :func:`type_version` hashes."""
        self.size: int | None = None


MAX_CHAIN = 8
"""How many past versions of a type's mapping a new one remembers the changes of."""

MAX_CHANGE_SLACK = 64
"""A change may name this many more resources than its map holds and be remembered."""


class _Changes:
    """One link of a group's change history of a type: the names that differ
    between a map and its predecessor (None: unknown, compare whole maps), whose
    own link is ``prev``."""

    __slots__ = ("changed", "prev")

    def __init__(self, changed: frozenset[str] | None, prev: _Changes | None) -> None:
        self.changed = changed
        self.prev = prev


class TypeMap(Mapping[str, Resource]):
    """The read-only resources of one type in a view, and what changed since before.

    Each map remembers the names that differ from its predecessor in the same
    group, and the predecessor's own history, so a stream that was up to date
    with an older map only looks at those names: an endpoint change costs each
    stream the size of the change, not the size of the configuration. Only the
    names are remembered, not the older maps: after everything is deleted, no
    resource is kept alive by the history.
    """

    __slots__ = ("_data", "_facts", "history", "source")
    history: _Changes

    def __init__(self, data: dict[str, Resource], prev: TypeMap | None = None,
                 changed: frozenset[str] = frozenset(),
                 source: Mapping[str, Resource] | None = None,
                 facts: _Facts | None = None) -> None:
        self._data = data
        self._facts = facts if facts is not None else _Facts()
        """Its version and size, computed once, shared by the maps of one ``data``."""
        if len(changed) > len(data) + MAX_CHANGE_SLACK:
            # A change larger than the map (everything deleted, say) is no cheaper
            # to follow than comparing the whole map: remember none of it.
            self.history = _Changes(None, None)
        else:
            self.history = _Changes(changed, prev.history if prev is not None else None)
        """What changed since the predecessor (``prev``), and before it."""
        self.source = source
        """The mapping this was copied from: given again, nothing changed."""
        node, depth = self.history, 0
        while node.prev is not None:
            depth += 1
            if depth >= MAX_CHAIN:
                node.prev = None  # a bounded history
                break
            node = node.prev

    def __getitem__(self, name: str) -> Resource:
        return self._data[name]

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, name: str, default: Any = None) -> Any:
        return self._data.get(name, default)

    def items(self) -> Any:  # dict views are read-only and much faster than the mixins
        return self._data.items()

    def values(self) -> Any:
        return self._data.values()

    def keys(self) -> Any:
        return self._data.keys()

    def byte_size(self) -> int:
        """Total serialized size of the resources (computed once)."""
        facts = self._facts
        if facts.size is None:
            facts.size = sum(len(r.body) for r in self._data.values())
        return facts.size

    def content_version(self) -> str:
        """:func:`type_version` of the resources (computed once)."""
        return _version_of_sum(self._total())

    def _total(self) -> int:
        facts = self._facts
        if facts.total is None:
            facts.total = sum(map(_term, self._data.values())) % _SUM_MODULUS
        return facts.total

    def follow(self, prev: TypeMap, changed: frozenset[str]) -> None:
        """Take the version's sum and the size from ``prev``'s, whose resources differ
        from these only in ``changed`` (each when ``prev``'s is known and this map's
        is not yet)."""
        facts, before = self._facts, prev._facts
        total = before.total if facts.total is None else None
        size = before.size if facts.size is None else None
        if total is None and size is None:
            return
        for name in changed:
            for res, sign in ((prev._data.get(name), -1), (self._data.get(name), 1)):
                if res is not None:
                    total = None if total is None else total + sign * _term(res)
                    size = None if size is None else size + sign * len(res.body)
        if total is not None:
            facts.total = total % _SUM_MODULUS
        if size is not None:
            facts.size = size

    def changes_since(self, older: Mapping[str, Resource] | None) -> set[str] | None:
        """Names that changed (added, updated, removed) since ``older``; None if unknown."""
        if older is self:
            return set()
        if not isinstance(older, TypeMap):
            return None
        target = older.history
        out: set[str] = set()
        node: _Changes | None = self.history
        while node is not None:
            if node.changed is None:
                return None
            out |= node.changed
            if node.prev is target:
                return out
            node = node.prev
        return None


_EMPTY = TypeMap({})

_SHARED_DIFFS = 32
"""Mappings (and diffs) remembered across groups: a few per resource type."""


class _SharedDiffs:
    """Copies and diffs of mappings handed to several groups (per-node views share
    whatever their node does not change: :mod:`kxds.fleet`), made once: 500 node
    groups given one new listener mapping copy and compare it once, not 500 times.

    Keyed by the identity of the mappings, holding them so an identity is not
    reused; only the last few are kept (they come in one rebuild), and none once
    the rebuild is over (:meth:`clear`): held past it, the mappings of a state
    since deleted would keep all its resources alive.
    """

    def __init__(self) -> None:
        self._copies: dict[int, tuple[Mapping[str, Resource], dict[str, Resource], _Facts]] = {}
        self._diffs: dict[tuple[int, int], tuple[Mapping[str, Resource],
                                                 Mapping[str, Resource], frozenset[str]]] = {}

    def copy(self, source: Mapping[str, Resource]) -> tuple[dict[str, Resource], _Facts]:
        """``dict(source)`` and what is known of it (its version, its size), shared by
        every group given the same ``source`` (never changed: a TypeMap's data is
        read-only)."""
        hit = self._copies.get(id(source))
        if hit is not None and hit[0] is source:
            return hit[1], hit[2]
        out, facts = copied(source), _Facts()
        _remember(self._copies, id(source), (source, out, facts))
        return out, facts

    def clear(self) -> None:
        """Forget every mapping and diff."""
        self._copies.clear()
        self._diffs.clear()

    def diff(self, old: TypeMap, new: Mapping[str, Resource]) -> frozenset[str]:
        """:func:`_diff` of ``old`` and ``new``, reused when another group had the same
        pair (``old`` copied from the same source)."""
        if old.source is None:
            return _diff(old, new)
        key = (id(old.source), id(new))
        hit = self._diffs.get(key)
        if hit is not None and hit[0] is old.source and hit[1] is new:
            return hit[2]
        changed = _diff(old, new)
        _remember(self._diffs, key, (old.source, new, changed))
        return changed


def _remember(table: dict[Any, Any], key: Any, value: Any) -> None:
    table.pop(key, None)
    table[key] = value
    while len(table) > _SHARED_DIFFS:
        del table[next(iter(table))]


def _diff(old: TypeMap, new: Mapping[str, Resource]) -> frozenset[str]:
    """Names added, updated or removed between two mappings of one type."""
    data = old._data
    if len(data) == len(new) and (all(map(operator.is_, data, new))
                                  or all(map(operator.eq, data, new))):
        # The same names in the same order (builds keep names sorted; an endpoint change
        # patches a copy of the last mapping): only the resources that are other
        # objects are looked at, found at C speed.
        moved = itertools.compress(zip(data, data.values(), new.values(), strict=True),
                                   map(operator.is_not, data.values(), new.values()))
        return frozenset(name for name, a, b in moved if a.version != b.version)
    get = data.get  # the dict's own: this runs over every resource of the type
    changed = {name for name, res in new.items()
               if (prev := get(name)) is None or (prev is not res
                                                  and prev.version != res.version)}
    kept = len(new) - sum(1 for name in changed if name not in old)
    if kept != len(old):  # some old names are gone
        changed |= {name for name in old if name not in new}
    return frozenset(changed)


@dataclass(eq=False)
class Watch:
    """A stream's subscription to its group's view: an event set on every change."""

    identity: NodeIdentity
    event: asyncio.Event = field(default_factory=asyncio.Event)
    loop: asyncio.AbstractEventLoop | None = None

    def notify(self) -> None:
        """Wake the stream (safe from another thread than the stream's loop)."""
        loop = self.loop
        if loop is None:
            self.event.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self.event.set)


ViewListener = Callable[[str, View], None]


class SnapshotCache:
    """Per-group views of Envoy resources, watched by xDS streams.

    Until :meth:`mark_synced` is called no stream is answered: an Envoy that
    connects before the source has synced waits instead of receiving an empty
    configuration that would tear down its listeners.
    """

    def __init__(self) -> None:
        self._views: dict[str, View] = {}
        self._watches: dict[str, set[Watch]] = {}
        self._synced = False
        self._seq = 0
        self.on_new_group: Callable[[NodeIdentity], None] | None = None
        """Called when a stream appears for a group without a view; the
        controller builds that group's view and calls :meth:`set_view`."""
        self.view_listeners: list[ViewListener] = []
        """Called after every ``set_view`` (metrics use this)."""
        self.removal_listeners: list[Callable[[str], None]] = []
        """Called with the group after every ``remove_view`` (metrics forget its series)."""
        self._idle_since: dict[str, float] = {}
        self.nodes = NodeTracker()
        """What each node was sent, ACKed and NACKed (for the config dump)."""
        self._shared = _SharedDiffs()
        self._count = 0
        """Resources in every view (see :meth:`count`)."""

    # -- the controller's side -------------------------------------------------

    def set_view(self, group: str, resources: Resources) -> None:
        """Replace the whole view of ``group`` and wake its streams.

        ``resources`` and its mappings are never changed afterwards: a type given
        as the same mapping object as in the group's last view is taken as
        unchanged without comparing its resources.
        """
        previous = self._views.get(group)
        types: dict[str, TypeMap] = {}
        memo: dict[str, str] = {}
        added = 0  # resources more than the last view's: counted in the types that changed
        for type_url, by_name in resources.items():
            old = previous.resources.get(type_url) if previous is not None else None
            if old is not None and by_name is old.source:
                changed: frozenset[str] | None = frozenset()  # the very mapping of last time
            else:
                changed = self._shared.diff(old, by_name) if old is not None else None
            if old is not None and not changed:
                # Unchanged type: keep the old mapping object, so streams can tell
                # by identity that nothing changed for them (and reuse its version).
                types[type_url] = old
                if previous is not None and type_url in previous.versions:
                    memo[type_url] = previous.versions[type_url]
            else:
                data, facts = self._shared.copy(by_name)
                types[type_url] = new = TypeMap(data, old, changed or frozenset(), by_name, facts)
                if old is not None and changed is not None and len(changed) < len(new):
                    new.follow(old, changed)  # the version costs the change, not the map
                added += len(data) - (len(old) if old is not None else 0)
        if previous is not None:
            added -= sum(len(m) for t, m in previous.resources.items() if t not in types)
        self._seq += 1
        view = View(MappingProxyType(types), self._seq, time.monotonic(), memo)
        self._views[group] = view
        self._count += added
        for listener in self.view_listeners:
            listener(group, view)
        for watch in self._watches.get(group, ()):
            watch.notify()

    def end_batch(self) -> None:
        """The views of one rebuild are set: forget what their groups shared (see
        :class:`_SharedDiffs`), so nothing outlives the views that use it."""
        self._shared.clear()

    def remove_view(self, group: str) -> None:
        """Forget a group's view (its streams keep their last state)."""
        view = self._views.pop(group, None)
        if view is not None:
            self._count -= view.count()
        self._idle_since.pop(group, None)
        for listener in self.removal_listeners:
            listener(group)

    def mark_synced(self) -> None:
        """The source has delivered its first complete state: start answering."""
        if self._synced:
            return
        self._synced = True
        log.info("event=synced groups=%d", len(self._views))
        for watches in self._watches.values():
            for watch in watches:
                watch.notify()

    @property
    def synced(self) -> bool:
        """Whether :meth:`mark_synced` has been called."""
        return self._synced

    def count(self) -> int:
        """Resources in every view together (a resource shared by views counts in each);
        kept as views are set, so asking costs nothing however many groups there are."""
        return self._count

    def groups(self) -> set[str]:
        """Groups that have a view or a connected stream."""
        return set(self._views) | {g for g, w in self._watches.items() if w}

    def watched_groups(self) -> set[str]:
        """Groups with at least one connected stream."""
        return {g for g, w in self._watches.items() if w}

    def idle_since(self, group: str) -> float | None:
        """``time.monotonic()`` when the last stream of ``group`` ended; None while one
        is connected (or none ever was)."""
        return None if self._watches.get(group) else self._idle_since.get(group)

    def identities(self, group: str) -> list[NodeIdentity]:
        """Identities of the streams watching ``group``."""
        return [w.identity for w in self._watches.get(group, ())]

    # -- the server's side -----------------------------------------------------

    def view(self, group: str) -> View | None:
        """The current view of ``group``, or None before it has one or before sync."""
        if not self._synced:
            return None
        return self._views.get(group)

    def watch(self, identity: NodeIdentity) -> Watch:
        """Register a stream for its group; asks the controller for a new group's view."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        watch = Watch(identity, loop=loop)
        self._watches.setdefault(identity.group, set()).add(watch)
        self._idle_since.pop(identity.group, None)
        if identity.group not in self._views and self.on_new_group is not None:
            try:
                self.on_new_group(identity)
            except Exception:  # a controller bug must not kill the stream
                log.exception("event=on_new_group_failed group=%s node=%s",
                              identity.group, identity.node_id)
        return watch

    def cancel(self, watch: Watch) -> None:
        """Unregister a stream."""
        watches = self._watches.get(watch.identity.group)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.identity.group]
                self._idle_since[watch.identity.group] = time.monotonic()

    def __iter__(self) -> Iterator[tuple[str, View]]:
        return iter(list(self._views.items()))
