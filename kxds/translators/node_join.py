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
from dataclasses import dataclass
from typing import cast

from kxds import ir
from kxds.diagnostics import Diagnostic
from kxds.kube.models import Key
from kxds.translators.node_service import Claim, Slot

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


@dataclass(frozen=True, slots=True, eq=False)
class Joined:
    """A node view joined from shares, with the indexes :func:`patched` uses. Compared
    by identity: a new join is a new value."""

    ir: ir.IR
    diagnostics: tuple[Diagnostic, ...]
    """Every share's problems, sorted."""
    shares: dict[Key, ServiceShare]
    claimants: dict[SlotKey, frozenset[Key]]
    """The Services claiming an address on each (port, protocol)."""
    owners: tuple[dict[str, Key], dict[str, Key], dict[str, Key]]
    """The Service owning each cluster, load assignment and listener name."""
    counts: dict[Diagnostic, int]
    """How many shares report each problem."""


def _name(item: _Item) -> str:
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
    slots: dict[SlotKey, Slot] = {}
    claimants: dict[SlotKey, set[Key]] = {}
    items: tuple[dict[str, _Item], dict[str, _Item], dict[str, _Item]] = ({}, {}, {})
    owners: tuple[dict[str, Key], dict[str, Key], dict[str, Key]] = ({}, {}, {})
    counts: dict[Diagnostic, int] = {}
    for key, share in shares:
        joined[key] = share
        for slot_key, address in share.claims:
            slot = slots.setdefault(slot_key, Slot())
            if slot.holder(address) is not None:
                return None
            slot.take(Claim(("", ""), address))
            claimants.setdefault(slot_key, set()).add(key)
        for kind, by_name, owner in zip(_kinds(share), items, owners, strict=True):
            for item in kind:
                name = _name(item)
                if by_name.setdefault(name, item) is not item:
                    return None
                owner[name] = key
        for d in share.diagnostics:
            counts[d] = counts.get(d, 0) + 1
    before = _tuples(previous) if previous is not None else ((), (), ())
    model = _view(*(_same_or(old, [by_name[k] for k in sorted(by_name)])
                    for old, by_name in zip(before, items, strict=True)))
    return Joined(model, tuple(sorted(counts)), joined,
                  {k: frozenset(v) for k, v in claimants.items()}, owners, counts)


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
    claimants = _claimants(last, changed)
    for slot_key in {s for key in changed for s, _ in (*last.shares[key].claims,
                                                        *changed[key].claims)}:
        slot = Slot()
        for key in claimants.get(slot_key, ()):
            for s, address in shares[key].claims:
                if s == slot_key:
                    if slot.holder(address) is not None:
                        return None
                    slot.take(Claim(("", ""), address))
    owners = (dict(last.owners[0]), dict(last.owners[1]), dict(last.owners[2]))
    tuples = []
    for i, (old, owner) in enumerate(zip(_tuples(last.ir), owners, strict=True)):
        gone = {_name(item) for key in changed for item in _kinds(last.shares[key])[i]}
        for name in gone:
            del owner[name]
        new: dict[str, _Item] = {}
        for key, share in changed.items():
            for item in _kinds(share)[i]:
                name = _name(item)
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
    return Joined(model, diagnostics, shares, claimants, owners, counts)


def _claimants(last: Joined, changed: Mapping[Key, ServiceShare]
               ) -> dict[SlotKey, frozenset[Key]]:
    """``last.claimants`` with the changed shares' claims in place of their last ones."""
    out = dict(last.claimants)
    for key, share in changed.items():
        for slot_key in {s for s, _ in last.shares[key].claims}:
            out[slot_key] = out[slot_key] - {key}
            if not out[slot_key]:
                del out[slot_key]
        for slot_key in {s for s, _ in share.claims}:
            out[slot_key] = out.get(slot_key, frozenset()) | {key}
    return out


def _replaced(old: tuple[_Item, ...], gone: Iterable[str], new: Mapping[str, _Item]
              ) -> tuple[_Item, ...]:
    """``old`` (sorted by name) without the items named ``gone``, with ``new`` in
    place (by name); ``old`` itself when that changes nothing, and an item equal to
    the one it replaces stays the old object."""
    items = list(old)
    name = _name
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
