"""A node view joined from its Services' shares, and patched when a few shares change.

Each Service is translated on its own into a :class:`ServiceShare`; the node
view is their union when no two of them claim an overlapping address on one
(port, protocol) or the same cluster or listener name (:mod:`kxds.translators.node`
translates them all in order otherwise, as the older Service must win).

:func:`join` joins every share and keeps what a later change needs: each
share, which Services claim each (port, protocol), who owns each name.
:func:`patched` then replaces a few shares using those, in time proportional
to them and to the slots they claim, not to the view: a nodePort moved among
1,000 Services joins one share again, not 1,000. Both give None when two
shares contend. A patched join equals a join of every share from scratch
(checked by tests); each kind keeps the very tuple of the last join when its
items are equal.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from kxds import ir
from kxds.diagnostics import Diagnostic
from kxds.kube.models import Key
from kxds.translators.node_service import ip_kind

SlotKey = tuple[int, str]
"""A (port, protocol) that Services claim addresses on."""

_Item = ir.Cluster | ir.LoadAssignment | ir.Listener
"""A named item of a node view (a load assignment is named by its cluster)."""


@dataclass(frozen=True, slots=True)
class ServiceShare:
    """One Service's part of a node view, translated as if no other Service claimed
    anything: what :func:`join` joins when no two Services contend."""

    clusters: tuple[ir.Cluster, ...]
    assignments: tuple[ir.LoadAssignment, ...]
    listeners: tuple[ir.Listener, ...]
    diagnostics: frozenset[Diagnostic]
    claims: tuple[tuple[SlotKey, str], ...]
    """The (port, protocol) and address of each place it took."""


@dataclass(slots=True)
class Taken:
    """The addresses claimed on one (port, protocol), none overlapping another: what
    :class:`~kxds.translators.node_service.Slot` tells while translating, kept so a
    claim can be given back (a wildcard address overlaps every address of its IP
    family). Not changed once a join holds it: a patch changes a copy. Small: a
    join holds one per port of every Service."""

    by_address: dict[str, Key] = field(default_factory=dict)
    ipv4: int = 0
    """How many IPv4 addresses are claimed (and IPv6 below)."""
    ipv6: int = 0
    wildcards: tuple[str, ...] = ()
    """The wildcard addresses claimed (one per IP family at most)."""

    def take(self, key: Key, address: str) -> bool:
        """Claim ``address`` for Service ``key``; False (and nothing taken) when it
        overlaps an address taken."""
        version, unspecified = ip_kind(address)
        claimed = self.ipv6 if version == 6 else self.ipv4
        if (address in self.by_address or (unspecified and claimed)
                or any(ip_kind(w)[0] == version for w in self.wildcards)):
            return False
        self._count(version, 1)
        self.by_address[address] = key
        if unspecified:
            self.wildcards += (address,)
        return True

    def give_back(self, address: str) -> None:
        """Release ``address`` (taken)."""
        version, unspecified = ip_kind(address)
        del self.by_address[address]
        self._count(version, -1)
        if unspecified:
            self.wildcards = tuple(w for w in self.wildcards if w != address)

    def _count(self, version: int, by: int) -> None:
        if version == 6:
            self.ipv6 += by
        else:
            self.ipv4 += by

    def copy(self) -> Taken:
        return Taken(dict(self.by_address), self.ipv4, self.ipv6, self.wildcards)


@dataclass(frozen=True, slots=True, eq=False)
class Joined:
    """A node view joined from shares, with the indexes :func:`patched` uses. Compared
    by identity: a new join is a new value."""

    ir: ir.IR
    diagnostics: tuple[Diagnostic, ...]
    """Every share's problems, sorted."""
    shares: dict[Key, ServiceShare]
    taken: dict[SlotKey, Taken]
    """The addresses claimed on each (port, protocol)."""
    owners: tuple[dict[str, Key], dict[str, Key], dict[str, Key]]
    """The Service owning each cluster, load assignment and listener name."""
    counts: dict[Diagnostic, int]
    """How many shares report each problem."""


def item_name(item: _Item) -> str:
    """The name of a node view's item (a load assignment's is its cluster's)."""
    return item.cluster if isinstance(item, ir.LoadAssignment) else item.name


def _kinds(share: ServiceShare) -> tuple[Sequence[_Item], Sequence[_Item], Sequence[_Item]]:
    return share.clusters, share.assignments, share.listeners


def _view(clusters: tuple[_Item, ...], assignments: tuple[_Item, ...],
          listeners: tuple[_Item, ...]) -> ir.IR:
    # Each tuple holds one kind (the kind of the tuples of _kinds in that place).
    return ir.IR(clusters=cast(tuple[ir.Cluster, ...], clusters),
                 load_assignments=cast(tuple[ir.LoadAssignment, ...], assignments),
                 listeners=cast(tuple[ir.Listener, ...], listeners))


def join(shares: Iterable[tuple[Key, ServiceShare]], previous: ir.IR | None) -> Joined | None:
    """The node view of ``shares`` (Service, share), or None when two of them contend.
    Each kind keeps the very tuple of ``previous`` when its items are equal."""
    joined: dict[Key, ServiceShare] = {}
    taken: dict[SlotKey, Taken] = {}
    items: tuple[dict[str, _Item], dict[str, _Item], dict[str, _Item]] = ({}, {}, {})
    owners: tuple[dict[str, Key], dict[str, Key], dict[str, Key]] = ({}, {}, {})
    counts: dict[Diagnostic, int] = {}
    for key, share in shares:
        joined[key] = share
        for slot_key, address in share.claims:
            if not taken.setdefault(slot_key, Taken()).take(key, address):
                return None
        for kind, by_name, owner in zip(_kinds(share), items, owners, strict=True):
            for item in kind:
                name = item_name(item)
                if by_name.setdefault(name, item) is not item:
                    return None
                owner[name] = key
        for d in share.diagnostics:
            counts[d] = counts.get(d, 0) + 1
    before = _tuples(previous) if previous is not None else ((), (), ())
    model = _view(*(_same_or(old, [by_name[k] for k in sorted(by_name)])
                    for old, by_name in zip(before, items, strict=True)))
    return Joined(model, tuple(sorted(counts)), joined, taken, owners, counts)


def _tuples(model: ir.IR) -> tuple[tuple[_Item, ...], tuple[_Item, ...], tuple[_Item, ...]]:
    return model.clusters, model.load_assignments, model.listeners


def _same_or(old: tuple[_Item, ...], new: list[_Item]) -> tuple[_Item, ...]:
    """``old`` when it holds the very objects of ``new``, or equal ones (a Service
    translated again gives equal clusters for every change but of its endpoints), so
    later stages tell it unchanged by identity; else ``new`` as a tuple. Compared at C
    speed: identical items are not looked into."""
    out = tuple(new)
    return old if old == out else out


def patched(last: Joined, changed: Mapping[Key, ServiceShare]) -> Joined | None:
    """``last`` with the shares of ``changed`` (Services already joined in it) in their
    place, or None when one of them now contends with another share."""
    shares = {**last.shares, **changed}
    taken = _retaken(last, changed)
    if taken is None:
        return None
    owners = (dict(last.owners[0]), dict(last.owners[1]), dict(last.owners[2]))
    tuples = []
    for i, (old, owner) in enumerate(zip(_tuples(last.ir), owners, strict=True)):
        gone = {item_name(item) for key in changed for item in _kinds(last.shares[key])[i]}
        for name in gone:
            del owner[name]
        new: dict[str, _Item] = {}
        for key, share in changed.items():
            for item in _kinds(share)[i]:
                name = item_name(item)
                if owner.setdefault(name, key) != key:
                    return None
                new[name] = item
        tuples.append(_replaced(old, gone - new.keys(), new))
    counts = dict(last.counts)
    for key, share in changed.items():
        for d in last.shares[key].diagnostics:
            counts[d] -= 1
            if not counts[d]:
                del counts[d]
        for d in share.diagnostics:
            counts[d] = counts.get(d, 0) + 1
    diagnostics = (last.diagnostics if counts.keys() == last.counts.keys()
                   else tuple(sorted(counts)))
    same = all(a is b for a, b in zip(tuples, _tuples(last.ir), strict=True))
    model = last.ir if same else _view(*tuples)
    return Joined(model, diagnostics, shares, taken, owners, counts)


def _retaken(last: Joined, changed: Mapping[Key, ServiceShare]
             ) -> dict[SlotKey, Taken] | None:
    """``last.taken`` with the changed shares' claims in place of their last ones (the
    slots they claim copied, the others shared); None when one now overlaps."""
    out = dict(last.taken)
    copied: set[SlotKey] = set()

    def slot(slot_key: SlotKey) -> Taken:
        if slot_key not in copied:
            copied.add(slot_key)
            out[slot_key] = out[slot_key].copy() if slot_key in out else Taken()
        return out[slot_key]

    for key in changed:
        for slot_key, address in last.shares[key].claims:
            slot(slot_key).give_back(address)
    for key, share in changed.items():
        for slot_key, address in share.claims:
            if not slot(slot_key).take(key, address):
                return None
    for slot_key in copied:
        if not out[slot_key].by_address:
            del out[slot_key]
    return out


def _replaced(old: tuple[_Item, ...], gone: Iterable[str], new: Mapping[str, _Item]
              ) -> tuple[_Item, ...]:
    """``old`` (sorted by name) without the items named ``gone``, with ``new`` in
    place (by name); ``old`` itself when that changes nothing, and an item equal to
    the one it replaces stays the old object."""
    items = list(old)
    name = item_name
    moved = False
    for n in gone:
        i = bisect.bisect_left(items, n, key=name)
        if i < len(items) and name(items[i]) == n:
            del items[i]
            moved = True
    for n, item in new.items():
        i = bisect.bisect_left(items, n, key=name)
        if i < len(items) and name(items[i]) == n:
            if items[i] != item:
                items[i] = item
                moved = True
        else:
            items.insert(i, item)
            moved = True
    return tuple(items) if moved else old
