"""Incremental translation: queries that record what they read, reused while it is unchanged.

The one mechanism by which a rebuild recomputes only what a change reaches.
A :class:`Query` is a pure function ``fn(ctx, key)`` of the ClusterState, the
translation config and other queries. It reads the state through
``ctx.state``, a :class:`~kxds.kube.models.ClusterState` whose mappings record
every access (a key looked up, or the whole collection iterated), the config
through ``ctx.config``, which records every attribute read, and other queries
through :meth:`Context.query`. Nobody lists what a step reads: the step
records it by reading. A new field read by a translator is seen the moment
it is read.

A :class:`Store` (one per view) keeps each query's value with what it read,
and decides reuse from those records (the "red-green" algorithm of
incremental build systems such as Salsa and Adapton):

- :meth:`Store.begin` compares the new state with the last one, object by
  object by identity (sources hand back the very same model object while a
  Kubernetes object is unchanged), and marks *dirty* every entry that read a
  changed key or iterated a changed collection, and *suspect* every entry that
  depends on a dirty or suspect one. Work is proportional to the change.
- Asking a clean entry costs a dict lookup. A suspect entry first brings its
  dependencies up to date; when none of their values changed it is clean
  again without running. A dirty entry runs again; when its new value equals
  the old one, the old object is kept, so whatever depends on it (by value or
  by identity further down, such as serialized resources) stays as it was:
  *early cutoff*.
- A query may give an ``update`` function that patches its last value from
  the list of what changed (the keys it read, the queries it used), instead of
  running in full: how an EndpointSlice change replaces one load assignment in
  a view of thousands of clusters without visiting the others.
- Entries no longer used by any query they served, nor asked for as roots,
  are dropped at the end of each rebuild, so memory follows the state (a
  deleted Secret's certificate checks go with it).
- A query marked ``firewall`` (a summary that many entries read, such as the
  clusters every route names, read once per Service) stops the marking: its
  readers are not made suspect when it might change, it is brought up to date
  in :meth:`Store.begin` instead, and only when its value did change are they
  marked. Without it, a change under the summary made every reader suspect,
  and checking them all again cost time in proportion to the readers, not to
  the change (rustc's incremental compilation calls such queries firewalls).

The recorded views are :mod:`kxds.recording`; finding what changed between two
states is :mod:`kxds.state_changes`.

Everything a query returns must be immutable, and equal values must be
interchangeable: queries are pure. A query with an ``update`` has all its
dependencies brought up to date first, also those for keys that may be gone
since (a Service deleted): such queries answer for a missing key too.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar, cast

from kxds.kube.models import ClusterState
from kxds.recording import Read, recorded_config, recorded_state
from kxds.state_changes import changed_reads

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING = object()

_COMPACT_ABOVE = 1024
"""Entries held at the most, above which a store's tables are made to fit again once
three quarters of them are gone."""


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed since an entry last ran: the reads it made that now give another
    object, and the queries it used whose values changed (an ``update`` works from these)."""

    reads: frozenset[Read]
    queries: tuple[tuple[str, Hashable], ...]
    before: ClusterState | None
    """The state the entry last ran (or was verified) on, when that was the last
    rebuild's; None otherwise (then an ``update`` cannot compare)."""


@dataclass(frozen=True, slots=True, eq=False)
class Query(Generic[K, V]):
    """A named pure function of the state; see the module docs."""

    name: str
    fn: Callable[[Context, K], V]
    update: Callable[[Context, K, V, Changes], V | None] | None = None
    """Optional: the new value from the last one and what changed, or None to run ``fn``."""
    firewall: bool = False
    """Brought up to date at :meth:`Store.begin`, its readers marked only when its value
    changed (see the module docs): for a query that many entries read."""


class _Entry:
    """One query's value at one key, with what it read and which queries it used."""

    __slots__ = ("changed", "changed_at", "deps", "dirty", "key", "parents",
                 "query", "reads", "suspect", "suspects", "value", "verified_at")

    def __init__(self, query: Query[Any, Any], key: Hashable) -> None:
        self.query = query
        self.key = key
        self.value: object = _MISSING
        self.reads: tuple[Read, ...] = ()
        """What it read (a tuple, not a set: most entries read one or two things)."""
        self.deps: tuple[_Entry, ...] = ()
        self.parents: Holders = None
        self.dirty = True
        self.suspect = False
        self.suspects: set[_Entry] | None = None
        """The dependencies that made this entry suspect: only they need a look.
        (None rather than an empty set, here and below: a view holds thousands of
        entries, most of them never suspect.)"""
        self.changed: set[Read] | None = None
        """Reads found changed while dirty (kept until the entry runs: for ``update``)."""
        self.changed_at = 0
        self.verified_at = 0


Holders: TypeAlias = "_Entry | set[_Entry] | None"
"""Entries that read one thing or use one entry: none, the one (most often), or a set.
A set costs 216 bytes even with one member; with thousands of entries, that was
most of the store's memory."""


def _held_with(holders: Holders, entry: _Entry) -> Holders:
    if holders is None or holders is entry:
        return entry
    if isinstance(holders, set):
        holders.add(entry)
        return holders
    return {holders, entry}


def _held_without(holders: Holders, entry: _Entry) -> Holders:
    if holders is entry:
        return None
    if isinstance(holders, set):
        holders.discard(entry)
        return holders or None
    return holders


def _each(holders: Holders) -> Iterable[_Entry]:
    if holders is None:
        return ()
    return holders if isinstance(holders, set) else (holders,)


class _Frame:
    __slots__ = ("deps", "entry", "reads")

    def __init__(self, entry: _Entry) -> None:
        self.entry = entry
        self.reads: set[Read] = set()
        self.deps: dict[int, _Entry] = {}


class Context:
    """What a running query reads through: the recorded state and config, other queries."""

    __slots__ = ("_frames", "_store", "config", "state")

    def __init__(self, store: Store, state: ClusterState, config: Any) -> None:
        self._store = store
        self._frames: list[_Frame] = []
        self.state = recorded_state(state, self._frames)
        """The state; every read through it is recorded for the running query."""
        self.config = recorded_config(config, self._frames)
        """The translation config; every attribute read is recorded."""

    def previous_value(self) -> object | None:
        """The running query's last value (None the first time): a query may reuse parts
        of it that are pure functions of inputs it finds identical (virtual hosts)."""
        value = self._frames[-1].entry.value if self._frames else _MISSING
        return None if value is _MISSING else value

    def query(self, query: Query[K, V], key: K) -> V:
        """The value of ``query`` at ``key``, computed or reused; a dependency of the caller."""
        entry = self._store._fetch(self, query, key)
        if self._frames:
            self._frames[-1].deps[id(entry)] = entry
        return cast(V, entry.value)


class Store:
    """The query values of one view, kept across rebuilds; not thread-safe.

    One rebuild at a time: :meth:`begin` with the new state, any number of
    :meth:`Context.query` calls (roots), then :meth:`end`.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, Hashable], _Entry] = {}
        self._readers: dict[Read, Holders] = {}
        self._state: ClusterState | None = None
        self._previous: ClusterState | None = None
        self._config: Any = None
        self._revision = 0
        self._roots: set[_Entry] = set()
        self._asked: set[_Entry] = set()
        self._held: set[_Entry] = set()
        """Firewall entries that may have changed, their readers not marked yet."""
        self._most = 0
        """The most entries held since the tables were last made to fit."""
        self.runs = 0
        """Queries run in full (cumulative; for tests and profiling)."""
        self.runs_by_query: dict[str, int] = {}
        """The same, by query name."""
        self.updates = 0
        """Queries patched by their ``update`` (cumulative)."""

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, state: ClusterState, config: Any) -> Context:
        """Start a rebuild of ``state``: mark what its changes reach; the context to query."""
        self._revision += 1
        previous = self._state
        if previous is not None:
            for read in changed_reads(previous, state, self._config, config):
                self._invalidate(read)
        self._previous, self._state, self._config = previous, state, config
        self._asked = set()
        ctx = _RootContext(self, state, config)
        self._settle(ctx)
        return ctx

    def end(self) -> None:
        """Finish the rebuild: forget every entry no root asked for, directly or not."""
        for gone in self._roots - self._asked:
            self._roots.discard(gone)
            self._release(gone)
        self._roots |= self._asked
        self._previous = None  # only this rebuild's updates compared with it
        self._most = max(self._most, len(self._entries))
        if self._most > _COMPACT_ABOVE and len(self._entries) * 4 < self._most:
            # A dict never shrinks as keys leave it: after most of the state is
            # deleted, copies free tables sized for all of it.
            self._entries, self._readers = dict(self._entries), dict(self._readers)
            self._most = len(self._entries)

    # -- invalidation ------------------------------------------------------------

    def _invalidate(self, read: Read) -> None:
        for entry in _each(self._readers.get(read)):
            if entry.changed is None:
                entry.changed = set()
            entry.changed.add(read)
            if not entry.dirty:
                entry.dirty = True
                if entry.query.firewall:
                    self._held.add(entry)
                else:
                    self._suspect_parents(entry)

    def _suspect_parents(self, entry: _Entry, through_firewalls: bool = False) -> None:
        """Mark every entry above ``entry`` suspect, up to (and holding) firewalls."""
        todo = [entry]
        while todo:
            child = todo.pop()
            for parent in _each(child.parents):
                if parent.suspects is None:
                    parent.suspects = set()
                parent.suspects.add(child)
                if not parent.suspect:
                    parent.suspect = True
                    if parent.query.firewall and not through_firewalls:
                        self._held.add(parent)
                    else:
                        todo.append(parent)

    def _settle(self, ctx: Context) -> None:
        """Bring the held firewalls up to date; mark the readers of those that changed.

        One at a time: refreshing one verifies only what is below it, and the
        marking from it stops at the next firewall up, held in turn. Two held
        at once might lie one below the other (the upper one's refresh would then
        trust entries above the lower one, not marked yet): they are marked
        through, as if they were no firewalls.
        """
        while self._held:
            if len(self._held) > 1:
                for entry in self._held:
                    self._suspect_parents(entry, through_firewalls=True)
                self._held.clear()
                return
            entry = self._held.pop()
            try:
                self._refresh(ctx, entry)
            except Exception:
                # A bug met in a query under it: mark its readers as if it were no
                # firewall; asked again by them, it raises where the rebuild reports it.
                self._suspect_parents(entry, through_firewalls=True)
                continue
            if entry.changed_at == self._revision:
                self._suspect_parents(entry)

    # -- fetching ----------------------------------------------------------------

    def _fetch(self, ctx: Context, query: Query[Any, Any], key: Hashable) -> _Entry:
        entry = self._entries.get((query.name, key))
        if entry is None:
            entry = self._entries[(query.name, key)] = _Entry(query, key)
        self._refresh(ctx, entry)
        return entry

    def _refresh(self, ctx: Context, entry: _Entry) -> None:
        """Bring ``entry`` up to date: reuse, revalidate, patch or run."""
        if entry.verified_at == self._revision or not (entry.dirty or entry.suspect):
            return
        changed_deps: list[_Entry] = []
        if not entry.dirty:
            # In the order they were used: an earlier one may have decided what
            # the later ones are (a list of keys, then a query per key).
            for dep in _in_order(entry.suspects or (), entry.deps):
                self._refresh(ctx, dep)
                if dep.changed_at > entry.verified_at:
                    changed_deps.append(dep)
                    if entry.query.update is None:
                        break  # it runs again anyway: the rest may no longer be needed
            if not changed_deps:
                entry.suspect = False
                entry.suspects = None
                entry.verified_at = self._revision
                return
        self._recompute(ctx, entry, changed_deps)

    def _recompute(self, ctx: Context, entry: _Entry, changed_deps: list[_Entry]) -> None:
        query, old = entry.query, entry.value
        value: object = _MISSING
        patched: object | None = None
        frame = _Frame(entry)
        ctx._frames.append(frame)
        try:
            # A dirty entry's dependencies are not looked at before it runs, so when one
            # may have changed too (suspect), ``changes`` could not name it: run in full.
            if query.update is not None and old is not _MISSING and not (
                    entry.dirty and entry.suspect):
                before = self._previous if entry.verified_at == self._revision - 1 else None
                changes = Changes(frozenset(entry.changed or ()),
                                  tuple((d.query.name, d.key) for d in changed_deps), before)
                patched = query.update(ctx, entry.key, old, changes)
                if patched is not None:
                    value = patched
                    self.updates += 1
            if value is _MISSING:
                value = query.fn(ctx, entry.key)
                self.runs += 1
                self.runs_by_query[query.name] = self.runs_by_query.get(query.name, 0) + 1
        finally:
            ctx._frames.pop()
        if patched is None:
            self._record(entry, frame)
        else:
            # A patch reads what the last run read, and what it read now besides
            # (usually nothing new: the changed dependencies it looked at again).
            known = set(map(id, entry.deps)) if frame.deps else set()
            new_deps = [d for d in frame.deps.values() if id(d) not in known]
            if new_deps or not frame.reads.issubset(entry.reads):
                frame.reads.update(entry.reads)
                frame.deps = {**{id(d): d for d in entry.deps}, **frame.deps}
                self._record(entry, frame)
        if old is _MISSING or not (old is value or old == value):
            entry.value = value
            entry.changed_at = self._revision
        entry.dirty = entry.suspect = False
        entry.changed = entry.suspects = None
        entry.verified_at = self._revision

    def _record(self, entry: _Entry, frame: _Frame) -> None:
        """Replace ``entry``'s reads and dependencies with those of its last run."""
        reads, before = frame.reads, set(entry.reads)
        for read in before - reads:
            self._stop_reading(entry, read)
        readers = self._readers
        for read in reads - before:
            readers[read] = _held_with(readers.get(read), entry)
        entry.reads = tuple(reads)
        new = tuple(frame.deps.values())
        kept = {id(d) for d in new}
        for dep in new:
            dep.parents = _held_with(dep.parents, entry)
        for dep in entry.deps:
            if id(dep) not in kept:
                dep.parents = _held_without(dep.parents, entry)
                self._release(dep)
        entry.deps = new

    def _stop_reading(self, entry: _Entry, read: Read) -> None:
        left = _held_without(self._readers.get(read), entry)
        if left is None:
            self._readers.pop(read, None)
        else:
            self._readers[read] = left

    def _release(self, entry: _Entry) -> None:
        """Drop ``entry`` (and what only it used) when nothing depends on it any more."""
        todo = [entry]
        while todo:
            e = todo.pop()
            if e.parents or e in self._roots or e in self._asked:
                continue
            if self._entries.get((e.query.name, e.key)) is e:
                del self._entries[(e.query.name, e.key)]
            for read in e.reads:
                self._stop_reading(e, read)
            for dep in e.deps:
                dep.parents = _held_without(dep.parents, e)
                todo.append(dep)
            e.deps, e.suspects = (), None  # no cycles left: freed by reference counting


class _RootContext(Context):
    """The context handed to the caller: its queries are the rebuild's roots."""

    __slots__ = ()

    def query(self, query: Query[K, V], key: K) -> V:
        entry = self._store._fetch(self, query, key)
        if not self._frames:
            self._store._asked.add(entry)
        else:
            self._frames[-1].deps[id(entry)] = entry
        return cast(V, entry.value)



def _in_order(some: Iterable[_Entry], deps: tuple[_Entry, ...]) -> list[_Entry]:
    """``some`` of ``deps``, in the order of ``deps`` (the order they were used in)."""
    chosen = list(some)
    if len(chosen) < 2:
        return chosen
    if len(chosen) <= _FEW:
        # Each found by an identity scan of ``deps`` at C speed: an entry that read every
        # Ingress has hundreds of dependencies, and usually two or three suspects.
        return sorted(chosen, key=lambda d: _place(deps, d))
    place = {id(d): i for i, d in enumerate(deps)}
    return sorted(chosen, key=lambda d: place.get(id(d), -1))


_FEW = 8


def _place(deps: tuple[_Entry, ...], entry: _Entry) -> int:
    try:
        return deps.index(entry)
    except ValueError:
        return -1
