"""Per-node views of a fleet: what they share built once, what differs built per node.

A rebuild sets the view of every per-node proxy. Translating and building
each node's view alone (:func:`kxds.views.build_node`) costs the whole
view per node: with 1,000 NodePort Services, 0.08 s per node for one Service
change, 41 s for 500 nodes (benchmark M9). But nodes of one class (zone, bind address, set-up:
:func:`~kxds.translators.node_fleet.node_class`) differ only in the local
parts of ``externalTrafficPolicy: Local`` Services with an endpoint on the node
(:mod:`kxds.translators.node_fleet`). So :class:`FleetMemo`, shared by every
node view of the controller:

- translates and builds each class's *template* once per rebuild, with the
  incremental store of that class (:mod:`kxds.incremental`), and patches its
  local parts for the Services that changed (:func:`patched_parts`);
- finds, once per rebuild, which Services changed (object or EndpointSlices)
  and which nodes carry each Service's endpoints;
- gives each node the template's very resource mappings when it has no local
  part of its own (so the snapshot cache knows them unchanged by identity),
  else copies with its few parts replaced;
- on a rebuild, recomputes a node's parts only for the changed Services it is
  concerned by, and gives a node whose parts and template stayed the same its
  last :class:`~kxds.views.Built` object again, which the controller does not
  even publish: an EndpointSlice change of a Local Service reaches the nodes
  of its endpoints (before and after) and no other;
- in :meth:`FleetMemo.build_all`, looks only at the nodes a rebuild may change,
  the *due* ones: those with an endpoint (before or after) of a changed Service
  with local parts (not a ClusterIP Service), those that joined or whose node
  info changed, those whose view is not put together from their template, and
  every node of a class whose template moved.
  The others are not even visited: a rebuild costs the nodes it changes, not the
  fleet. Of the due nodes, it tells those left untouched after all, and those
  only the template's move reaches, from the round's changes and the template's
  moved parts, without looking at their parts one by one.

A node that is not due is *current* as of its template's last round: its view
is its last one, and its parts are the template's current ones (what visiting
it, untouched, would have set round after round). A template's round that keeps
its view (the same object) and changes no Service with parts every node computes
(:attr:`~kxds.translators.node_fleet.TemplateParts.nonempty`) leaves its nodes
current; any other round of it makes every node of its class due, each first
given the round and parts it was current at.

A view that a template cannot express (a local part under a name the
template lacks) is built alone by :func:`kxds.views.build_node`, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import TypeVar

from kxds import ir
from kxds.envoy.build import BuildCache, SharedBuilds
from kxds.envoy.resource import Resources
from kxds.fleet_assembly import Assembly, keeping, same_parts, same_view
from kxds.kube.models import ClusterState, Key
from kxds.state_changes import changed_reads
from kxds.translators.config import NodeInfo, TranslateConfig
from kxds.translators.node_fleet import (
    LocalPart,
    TemplateParts,
    endpoint_nodes,
    local_parts,
    node_class,
    patched_parts,
    template_parts,
)
from kxds.translators.translation import Translation
from kxds.views import Built, ViewMemo, build_node


@dataclass(slots=True)
class _Template:
    """One class of nodes: its store, its last build and its local parts."""

    memo: ViewMemo
    built: Built | None = None
    parts: TemplateParts | None = None
    round: int = -1
    moves: dict[int, tuple[TemplateParts, frozenset[Key]]] = field(default_factory=dict)
    """id of one of the last few ``parts`` -> it, and the Services whose parts may differ
    between it and the current ``parts`` (so a node built against it looks at those
    only; see :meth:`moved_since`)."""

    def set_parts(self, parts: TemplateParts | None, moved: frozenset[Key] | None) -> None:
        """Take ``parts``, whose Services other than ``moved`` have the parts they had
        in the current ``parts`` (None: not known)."""
        last = self.parts
        if parts is last:
            return
        if last is None or parts is None or moved is None:
            self.moves = {}
        else:
            self.moves = {k: (old, keys | moved) for k, (old, keys) in self.moves.items()}
            self.moves[id(last)] = (last, moved)
            while len(self.moves) > _PARTS_KEPT:
                del self.moves[next(iter(self.moves))]
        self.parts = parts

    def moved_since(self, parts: TemplateParts) -> frozenset[Key] | None:
        """The Services whose parts may differ between ``parts`` and the current ones;
        None when not known (compare them all)."""
        if parts is self.parts:
            return frozenset()
        hit = self.moves.get(id(parts))
        return hit[1] if hit is not None and hit[0] is parts else None


@dataclass(slots=True)
class _Node:
    """What one node's view keeps between rebuilds."""

    node: NodeInfo
    cls: NodeInfo
    """Its class (:func:`node_class`): which template it is built from."""
    round: int = -1
    template: Built | None = None
    """The template's view this node's view was put together from (None: built alone)."""
    source: _Template | None = None
    """The template of its class, as of its last view."""
    by_service: dict[Key, dict[str, LocalPart]] = field(default_factory=dict)
    parts: TemplateParts | None = None
    """The template's local parts that ``by_service`` was computed against."""
    assembly: Assembly = field(default_factory=Assembly)
    built: Built | None = None

    @property
    def last(self) -> Resources | None:
        """The resources of its last view."""
        return self.built.resources if self.built is not None else None


_K = TypeVar("_K")

_NO_KEYS: frozenset[Key] = frozenset()

_HISTORY = 8
"""Rounds of changes kept: a node view built a few rounds ago is still patched."""

_PARTS_KEPT = 2
"""Past local parts of a template whose differences from the current ones are kept:
every node view is built each round, so the last one or two are all that is asked for."""

_SERVICE_FIELDS = frozenset({"services", "slices_by_service"})
"""The fields of a state by Service key that a node view's parts read."""

_COMPARED = ("services", "endpoint_slices", "slices_by_service")
"""The fields compared to find their changes (those of ``slices_by_service`` are told
from the changed ``endpoint_slices``, compared before it)."""

_CHANGE_SLACK = 64
"""A round may change this many more Services than the state has and be kept."""


class FleetMemo:
    """Shared by every per-node view of a controller; see the module docs. Not thread-safe:
    one build at a time (the controller's lock)."""

    def __init__(self, shared: SharedBuilds | None = None) -> None:
        self._shared = shared
        self._templates: dict[NodeInfo, _Template] = {}
        self._nodes: dict[str, _Node] = {}
        """Every node that joined (:meth:`join`) and was not forgotten, by group."""
        self._members: dict[NodeInfo, set[str]] = {}
        """Class (:func:`node_class`) -> the groups of its nodes."""
        self._groups_of: dict[str, set[str]] = {}
        """Node name -> the groups of the nodes of that name."""
        self._due: set[str] = set()
        """The groups the next :meth:`build_all` looks at (see the module docs); every
        other node is current as of its template's round."""
        self._state: ClusterState | None = None
        self._config: TranslateConfig | None = None
        self._round = 0
        self._history: dict[int, frozenset[Key]] = {}
        """Round -> the Services changed since the round before (the last few)."""
        self._nodes_of: dict[Key, frozenset[str]] = {}
        self._on_node: dict[str, set[Key]] = {}
        self.assembled = 0
        """Node views put together from a template (cumulative; for tests and profiling)."""
        self.templates_built = 0
        """Template translations and builds (cumulative)."""

    def join(self, group: str, node: NodeInfo) -> None:
        """Serve ``group`` the view of ``node`` from the next :meth:`build_all` on (its
        proxies connected, or their node info changed); the same node again: nothing."""
        mine = self._nodes.get(group)
        if mine is not None and (mine.node is node or mine.node == node):
            return
        self.forget(group)
        self._nodes[group] = _Node(node, node_class(node))
        self._members.setdefault(node_class(node), set()).add(group)
        self._groups_of.setdefault(node.name, set()).add(group)
        self._due.add(group)

    def forget(self, group: str) -> None:
        """Drop the node view of ``group`` (its proxies left)."""
        mine = self._nodes.pop(group, None)
        self._due.discard(group)
        if mine is not None:
            _unlist(self._members, mine.cls, group)
            _unlist(self._groups_of, mine.node.name, group)

    def sweep(self) -> None:
        """After a rebuild: drop the templates no node used in it, and the rounds that
        changed more Services than the state now has (everything deleted, say): a node
        view behind them is rebuilt whole, no dearer than following them, and the
        history keeps no deleted Service alive."""
        self._templates = {k: t for k, t in self._templates.items() if t.round == self._round}
        state = self._state
        if state is not None:
            limit = len(state.services) + len(state.slices_by_service) + _CHANGE_SLACK
            self._history = {r: c for r, c in self._history.items() if len(c) <= limit}

    def build_all(self, state: ClusterState, config: TranslateConfig,
                  alone: Callable[[str], ViewMemo] | None = None) -> dict[str, Built]:
        """The views of the joined groups that may differ from the last ones built for
        them (:meth:`join`; a group joined since is among them), by group; every other
        group's view is its last one. Only the due groups are looked at (see the module
        docs), and of them, one this round leaves untouched costs a few comparisons.
        ``alone``: a group's own memo."""
        self._begin(state, config)
        for cls in self._members:
            self._template(state, config, cls)
        out = {}
        for group in list(self._due):  # what build() does, its template built already
            mine = self._nodes[group]
            out[group] = self._build(state, config, group, mine, alone)
            self._settle(group, mine)
        return out

    def _settle(self, group: str, mine: _Node) -> None:
        """After a visit (:meth:`_build`, which leaves the node current as of this round):
        the node is no longer due when its view is put together from its template's
        (a view built alone stays due)."""
        template = mine.source
        if template is not None and mine.template is not None and mine.template is template.built:
            self._due.discard(group)
        else:
            self._due.add(group)

    def build(self, state: ClusterState, config: TranslateConfig, group: str,
              node: NodeInfo, alone: ViewMemo | None = None) -> Built:
        """The view of the per-node proxy ``node`` (group ``group``) for ``state``.

        ``alone``: the group's own memo, for a view that must be built alone
        (:func:`~kxds.views.build_node`); pure but for the memos.
        """
        self._begin(state, config)
        self.join(group, node)
        mine = self._nodes[group]
        built = self._build(state, config, group, mine, lambda _: alone)
        self._settle(group, mine)
        return built

    def _build(self, state: ClusterState, config: TranslateConfig, group: str, mine: _Node,
               alone: Callable[[str], ViewMemo | None] | None) -> Built:
        """:meth:`build` of the joined node of ``group``, in a round begun; ``alone``
        gives the group's own memo (asked for only when the view is built alone)."""
        node = mine.node
        template = mine.source
        if template is None or template.round != self._round:  # (one swept is of a past round)
            template = mine.source = self._template(state, config, mine.cls)
        changed = self._changes_since(mine.round)
        built = template.built
        assert built is not None
        if built.resources is None or template.parts is None:
            mine.round, mine.built, mine.template = self._round, built, None
            return built
        known = changed is not None and mine.built is not None and mine.parts is not None
        same = known and mine.template is built
        if known:
            assert changed is not None
            todo = self._todo(mine, template, changed, same)
        else:
            todo, mine.by_service = self._concerned(mine, template), {}
        mine.parts, mine.round = template.parts, self._round
        if known and not todo and mine.template is not None:
            # Its parts are those of its last view: that view, or the moved template's
            # with them in place.
            assert mine.built is not None
            return mine.built if same else self._assembled(mine, built, mine.assembly.put_together(
                built.resources, mine.assembly.by_type, mine.last))
        for key in todo:
            found = local_parts(state, template.parts, key, node)
            if found:
                mine.by_service[key] = found
            else:
                mine.by_service.pop(key, None)
        overrides = {n: v for parts in mine.by_service.values() for n, v in parts.items()}
        if same and mine.assembly.same_parts_in_place(overrides):
            assert mine.built is not None
            return mine.built
        resources = mine.assembly.assemble(built.resources, overrides, mine.last)
        if resources is None:
            memo = alone(group) if alone is not None else None
            mine.assembly.base = None
            mine.template, mine.built = None, build_node(state, config, node, memo)
            return mine.built
        return self._assembled(mine, built, resources)

    def _assembled(self, mine: _Node, built: Built, resources: Resources) -> Built:
        """The node's view of ``resources`` put together from the template ``built``:
        its last view again when it is the same."""
        if mine.built is not None and resources is mine.built.resources and (
                mine.built.with_resources(None) == built.with_resources(None)):
            mine.template = built
            return mine.built
        self.assembled += 1
        mine.template, mine.built = built, built.with_resources(resources)
        return mine.built

    def _concerned(self, mine: _Node, template: _Template) -> Set[Key]:
        """The Services the node may have parts of: those with an endpoint on it, and
        those with parts every node computes."""
        parts = template.parts
        assert parts is not None
        return (self._on_node.get(mine.node.name, _NO_KEYS) & parts.services) | parts.nonempty

    def _todo(self, mine: _Node, template: _Template, changed: Set[Key],
              same: bool) -> Set[Key]:
        """The Services whose parts of the node may differ from those of its last view:
        of those it has or may have parts of, those ``changed`` since and, unless the
        template's view is the ``same``, those whose template parts moved (a Service's
        parts stay valid while it, its slices and its share of the template are the
        same). Told from the template's moved parts, else compared one by one."""
        parts = template.parts
        assert mine.parts is not None and parts is not None
        moved = _NO_KEYS if same else template.moved_since(mine.parts)
        if moved is None:
            keys = self._concerned(mine, template) | mine.by_service.keys()
            return (keys & changed) | {key for key in keys
                                       if not same_parts(mine.parts, parts, key)}
        may = changed | moved
        if (may.isdisjoint(mine.by_service) and may.isdisjoint(parts.nonempty)
                and may.isdisjoint(self._on_node.get(mine.node.name, _NO_KEYS))):
            return _NO_KEYS  # most nodes: told without gathering the node's Services
        return (self._concerned(mine, template) | mine.by_service.keys()) & may

    def _begin(self, state: ClusterState, config: TranslateConfig) -> None:
        """Start a round when the state or config is new: what changed since the last,
        and the nodes with an endpoint (before or after) of a changed Service that has
        local parts (:meth:`_served`) made due."""
        if state is self._state and (config is self._config or config == self._config):
            return
        before = self._state
        changed = _changed_services(before, state) if before is not None else None
        if changed is None:
            self._nodes_of, self._on_node = {}, {}
            changed = frozenset(state.slices_by_service.keys() | state.services.keys())
        touched: set[str] = set()
        for key in changed:
            gone = self._nodes_of.pop(key, frozenset())
            for name in gone:
                keys = self._on_node[name]
                keys.discard(key)
                if not keys:  # a node with no endpoint left (maybe gone) is not kept
                    del self._on_node[name]
            nodes = endpoint_nodes(state, key)
            if nodes:
                self._nodes_of[key] = nodes
                for name in nodes:
                    self._on_node.setdefault(name, set()).add(key)
            if self._served(key):
                touched.update(gone)
                touched.update(nodes)
        for name in touched:
            self._make_due(self._groups_of.get(name, frozenset()))
        self._state, self._config = state, config
        self._round += 1
        self._history[self._round] = changed
        self._history.pop(self._round - _HISTORY, None)

    def _served(self, key: Key) -> bool:
        """Whether Service ``key`` has local parts in a template as of its last round.
        One with none (a ClusterIP Service) concerns no node's own parts: a node view
        changes with it only when its template's view does, which then makes its whole
        class due (a Service gaining local parts adds them to the template's view)."""
        return any(t.parts is not None and key in t.parts.services
                   for t in self._templates.values())

    def _changes_since(self, round_: int) -> frozenset[Key] | None:
        """The Services changed after round ``round_`` up to now; None when not known."""
        if round_ < 0 or round_ > self._round:
            return None
        if round_ == self._round - 1:  # the common case: this round's, not copied
            return self._history.get(self._round)
        out: set[Key] = set()
        for r in range(round_ + 1, self._round + 1):
            found = self._history.get(r)
            if found is None:
                return None
            out |= found
        return frozenset(out)

    def _template(self, state: ClusterState, config: TranslateConfig,
                  cls: NodeInfo) -> _Template:
        """The template of the node class ``cls`` (:func:`node_class`), built once a round."""
        template = self._templates.get(cls)
        if template is None:
            template = self._templates[cls] = _Template(ViewMemo(build=BuildCache(self._shared)))
        if template.round != self._round:
            last, before = template.built, template.memo.build.last
            was = template.round, template.parts
            new = build_node(state, config, cls, template.memo)
            if new.resources is None:
                template.built = new
                template.set_parts(None, None)
            else:
                if last is None or template.parts is None or not same_view(last, new):
                    template.built = keeping(last, new)
                # else unchanged: the same object, so node views see it unchanged by identity.
                self._parts(template, state, before[0] if before is not None else None)
            if not self._calm(template, last, *was):
                self._make_due(self._members.get(cls, frozenset()), template, was)
            template.round = self._round
            self.templates_built += 1
        return template

    def _calm(self, template: _Template, last: Built | None, was_round: int,
              was_parts: TemplateParts | None) -> bool:
        """Whether the template's round just built leaves every node of its class that
        is current as of its last round current (the round before): its view is the same
        object, and no Service changed has parts every node computes."""
        changed = self._history.get(self._round)
        parts = template.parts
        return (changed is not None and was_round == self._round - 1
                and last is not None and template.built is last
                and parts is not None and was_parts is not None
                and changed.isdisjoint(parts.nonempty) and changed.isdisjoint(was_parts.nonempty))

    def _make_due(self, groups: Set[str], template: _Template | None = None,
                  was: tuple[int, TemplateParts | None] = (-1, None)) -> None:
        """Make ``groups`` due, each first given the round and parts it is current at: its
        template's (``was`` for ``template``, whose new round is being built)."""
        fresh = groups - self._due
        for group in fresh:
            mine = self._nodes[group]
            source = mine.source
            if source is not None:
                mine.round, mine.parts = was if source is template else (source.round,
                                                                          source.parts)
        self._due |= fresh

    def _parts(self, template: _Template, state: ClusterState, before: ir.IR | None) -> None:
        """The template's local parts after a build: those of the last build patched
        where the template's IR and Services changed (:func:`patched_parts`), else
        found again from the whole IR."""
        last = template.memo.build.last
        assert last is not None
        changed = self._changes_since(template.round)
        if template.parts is not None and before is not None and changed is not None:
            patched = patched_parts(template.parts, before, last[0], state, changed)
            if patched is not None:
                template.set_parts(*patched)
                return
        template.set_parts(template_parts(Translation(ir=last[0]), state), None)


def _unlist(index: dict[_K, set[str]], key: _K, group: str) -> None:
    """Take ``group`` out of ``index[key]``, and the key out when no group is left."""
    groups = index[key]
    groups.discard(group)
    if not groups:
        del index[key]


def _changed_services(before: ClusterState, after: ClusterState) -> frozenset[Key]:
    """The Services whose object or EndpointSlices differ between the two states, found
    as the incremental store finds its changed reads: in proportion to the change."""
    return frozenset(key for name, key in changed_reads(before, after, None, None, _COMPARED)
                     if name in _SERVICE_FIELDS and isinstance(key, tuple))  # not WHOLE
